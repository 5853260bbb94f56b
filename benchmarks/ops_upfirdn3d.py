# SPDX-License-Identifier: Apache-2.0
"""upfirdn3d speed: forward + backward time of the CUDA plugin against the pure-PyTorch reference.

Shapes are the generator's and discriminator's at 256x256x24 (batch 8, 128 channels) with the [1, 3, 3, 1]
filter: in-plane up-sampling of [8, 128, 24, 128, 128] by [2, 2, 1], the matching down-sampling of
[8, 128, 24, 256, 256], and filter3d over all three axes of [8, 128, 24, 256, 256].

    python benchmarks/ops_upfirdn3d.py                    # on the GPU: fp16, bf16, fp32 x channels_last/contiguous
    python benchmarks/ops_upfirdn3d.py --small            # a quick CPU smoke run on tiny shapes
"""

from __future__ import annotations

from typing import Callable, Sequence

import click
import torch

from common import device_name, print_table, time_fn  # noqa: I001 (puts the repo on sys.path)
from torch_utils.ops import upfirdn3d

DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16, 'fp32': torch.float32}
COLUMNS = ['op', 'shape', 'dtype', 'layout', 'cuda_ms', 'ref_ms', 'ref/cuda']


def _cases(small: bool) -> list[tuple[str, list[int], Callable]]:
    """(name, input shape, op(x, f, impl)) for each benchmarked call."""
    low, high = ([1, 4, 6, 16, 16], [1, 4, 6, 32, 32]) if small else ([8, 128, 24, 128, 128], [8, 128, 24, 256, 256])
    return [
        ('upsample3d up=[2,2,1]', low, lambda x, f, impl: upfirdn3d.upsample3d(x, f, up=[2, 2, 1], impl=impl)),
        ('downsample3d down=[2,2,1]', high,
         lambda x, f, impl: upfirdn3d.downsample3d(x, f, down=[2, 2, 1], impl=impl)),
        ('filter3d', high, lambda x, f, impl: upfirdn3d.filter3d(x, f, impl=impl)),
    ]


def _fwd_bwd_seconds(op: Callable, x: torch.Tensor, f: torch.Tensor, impl: str, device: torch.device,
                     iters: int) -> float:
    """Median seconds of one forward + backward pass."""
    dy = torch.randn_like(op(x.detach(), f, impl))

    def step():
        x.grad = None
        op(x, f, impl).backward(dy)
    return time_fn(step, device, warmup=2, iters=iters)


def bench_upfirdn3d(device: torch.device, small: bool = False, dtypes: Sequence[str] = ('fp16', 'bf16', 'fp32'),
                    layouts: Sequence[str] = ('cl', 'cf'), iters: int = 5) -> list[dict]:
    """Time impl='cuda' and impl='ref' for every case, dtype and layout; one row per combination.

    Args:
        device: where to run (on a CPU both impls run the reference; the numbers then only smoke-test the code).
        small: tiny shapes instead of the 256x256x24 training shapes.
        dtypes: names from DTYPES.
        layouts: 'cl' (channels_last_3d) and/or 'cf' (contiguous).
        iters: timed repetitions (the median is reported).

    Returns:
        Rows with op, shape, dtype, layout, cuda_ms, ref_ms and ref/cuda (the speed-up of the plugin).
    """
    f = upfirdn3d.setup_filter([1, 3, 3, 1], device=device)
    rows = []
    for name, shape, op in _cases(small):
        for dtype_name in dtypes:
            for layout in layouts:
                memory_format = torch.channels_last_3d if layout == 'cl' else torch.contiguous_format
                x = torch.randn(shape, device=device, dtype=DTYPES[dtype_name]).to(memory_format=memory_format)
                x.requires_grad_(True)
                cuda_s = _fwd_bwd_seconds(op, x, f, 'cuda', device, iters)
                ref_s = _fwd_bwd_seconds(op, x, f, 'ref', device, iters)
                rows.append(dict(op=name, shape='x'.join(map(str, shape)), dtype=dtype_name, layout=layout,
                                 cuda_ms=cuda_s * 1e3, ref_ms=ref_s * 1e3, **{'ref/cuda': ref_s / cuda_s}))
                del x
                if device.type == 'cuda':
                    torch.cuda.empty_cache()
    return rows


@click.command()
@click.option('--small', is_flag=True, help='Tiny shapes for a CPU smoke run')
@click.option('--dtypes', default='fp16,bf16,fp32', show_default=True, help='Comma-separated: fp16, bf16, fp32')
@click.option('--layouts', default='cl,cf', show_default=True, help='cl = channels_last_3d, cf = contiguous')
@click.option('--iters', default=5, show_default=True, type=click.IntRange(min=1), help='Timed repetitions')
def main(small: bool, dtypes: str, layouts: str, iters: int) -> None:
    """Print the CUDA-vs-reference table for upsample3d, downsample3d and filter3d."""
    dtype_list = [d for d in dtypes.split(',') if d]
    if not dtype_list or any(d not in DTYPES for d in dtype_list):
        raise click.BadParameter(f'"{dtypes}" is not a list of {", ".join(DTYPES)}', param_hint='--dtypes')
    layout_list = [v for v in layouts.split(',') if v]
    if not layout_list or any(v not in ('cl', 'cf') for v in layout_list):
        raise click.BadParameter(f'"{layouts}" is not a list of cl, cf', param_hint='--layouts')
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    print(f'upfirdn3d forward + backward on {device_name(device)} ({"small" if small else "training"} shapes)')
    if device.type != 'cuda':
        print('No CUDA device: impl=cuda falls back to the reference, so both columns time the reference.')
    print_table(bench_upfirdn3d(device, small=small, dtypes=dtype_list, layouts=layout_list, iters=iters), COLUMNS)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
