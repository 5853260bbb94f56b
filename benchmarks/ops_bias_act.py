# SPDX-License-Identifier: Apache-2.0
"""bias_act speed: forward + backward of lrelu with clamp 256, CUDA plugin against the PyTorch reference.

Times the training-shape activation [8, 128, 24, 256, 256] (batch 8, 128 channels at 256x256x24) in channels_last_3d,
in float16 and bfloat16, and prints both times and their ratio.

    python benchmarks/ops_bias_act.py            # on the GPU, at the training shape
    python benchmarks/ops_bias_act.py --small    # a quick CPU smoke run at [2, 8, 4, 16, 16]
"""

from __future__ import annotations

import functools
from typing import Sequence

import click
import torch

try:
    from benchmarks.common import device_name, print_table, time_fn
except ImportError:  # Run as a script: benchmarks/ is on sys.path, and common puts the repository there.
    from common import device_name, print_table, time_fn  # noqa: I001
from torch_utils.ops.bias_act import bias_act

TRAINING_SHAPE = (8, 128, 24, 256, 256)
SMALL_SHAPE = (2, 8, 4, 16, 16)


def _forward_backward(x: torch.Tensor, b: torch.Tensor, dy: torch.Tensor, impl: str) -> None:
    y = bias_act(x, b, act='lrelu', clamp=256, impl=impl)
    torch.autograd.grad(y, [x, b], dy)


def bench_bias_act(device: torch.device | str, shape: Sequence[int] = TRAINING_SHAPE,
                   dtypes: Sequence[str] = ('float16', 'bfloat16'), warmup: int = 2, iters: int = 5) -> list[dict]:
    """Median forward + backward milliseconds of bias_act for impl='cuda' and impl='ref', one row per dtype.

    Args:
        device: Where to run; on a CPU device impl='cuda' runs the reference too (the ratio is then about 1).
        shape: Input shape `[N, C, D, H, W]`; the tensors are channels_last_3d.
        dtypes: torch dtype names.
        warmup: Untimed calls before timing (the first CUDA call builds the plugin).
        iters: Timed calls; the median is reported.

    Returns:
        Rows with dtype, shape, cuda_ms, ref_ms, ref_over_cuda, cuda_gb_per_s and the impl actually used.
    """
    device = torch.device(device)
    rows = []
    for name in dtypes:
        dtype = getattr(torch, name)
        x = torch.randn(shape, device=device, dtype=dtype).to(memory_format=torch.channels_last_3d).requires_grad_()
        b = torch.randn(shape[1], device=device, dtype=dtype, requires_grad=True)
        dy = torch.randn_like(x)
        seconds = {impl: time_fn(functools.partial(_forward_backward, x, b, dy, impl), device, warmup, iters)
                   for impl in ('cuda', 'ref')}
        # Bytes the fused path must move: read x, write y; read dy and y, write dx; read dx for the bias gradient.
        traffic = 6 * x.numel() * x.element_size()
        rows.append(dict(dtype=name, shape='x'.join(map(str, shape)), cuda_ms=1e3 * seconds['cuda'],
                         ref_ms=1e3 * seconds['ref'], ref_over_cuda=seconds['ref'] / seconds['cuda'],
                         cuda_gb_per_s=traffic / seconds['cuda'] / 1e9,
                         cuda_impl='plugin' if device.type == 'cuda' else 'ref (no CUDA device)'))
        del x, b, dy
        if device.type == 'cuda':
            torch.cuda.empty_cache()
    return rows


@click.command()
@click.option('--shape', default=','.join(map(str, TRAINING_SHAPE)), show_default=True, help='N,C,D,H,W')
@click.option('--dtypes', default='float16,bfloat16', show_default=True, help='Comma-separated torch dtypes')
@click.option('--small', is_flag=True, help=f'Use {list(SMALL_SHAPE)} (a CPU smoke run)')
@click.option('--iters', default=5, show_default=True, type=click.IntRange(min=1), help='Timed calls')
def main(shape: str, dtypes: str, small: bool, iters: int) -> None:
    try:
        dims = SMALL_SHAPE if small else tuple(int(v) for v in shape.split(','))
    except ValueError as e:
        raise click.BadParameter(f'expected five comma-separated ints, got {shape!r}', param_hint='--shape') from e
    if len(dims) != 5 or min(dims) < 1:
        raise click.BadParameter(f'expected five comma-separated ints >= 1, got {shape!r}', param_hint='--shape')
    for name in dtypes.split(','):
        if not isinstance(getattr(torch, name, None), torch.dtype):
            raise click.BadParameter(f'{name!r} is not a torch dtype', param_hint='--dtypes')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    rows = bench_bias_act(device, dims, dtypes.split(','), iters=iters)
    print(f'\nbias_act lrelu clamp=256, forward + backward, channels_last_3d, {device_name(device)}\n')
    print_table(rows, ['dtype', 'shape', 'cuda_ms', 'ref_ms', 'ref_over_cuda', 'cuda_gb_per_s', 'cuda_impl'])


if __name__ == '__main__':
    main()
