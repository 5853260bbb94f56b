# SPDX-License-Identifier: Apache-2.0
"""All custom ops at the 256x256x24 training shapes (batch 8, 128 channels), CUDA plugin against reference.

One table: in-plane up-sampling of [8, 128, 24, 128, 128] with the [1, 3, 3, 1] filter, the matching
down-sampling and filter3d of [8, 128, 24, 256, 256], and bias_act lrelu with clamp 256 on [8, 128, 24, 256, 256];
forward + backward, channels_last_3d, fp16 and bf16. The per-op scripts (ops_bias_act.py, ops_upfirdn3d.py) take
more options.

    python benchmarks/ops.py            # on the GPU
    python benchmarks/ops.py --small    # a quick CPU smoke run on tiny shapes
"""

from __future__ import annotations

import click
import torch

from common import device_name, print_table  # noqa: I001 (puts the repo on sys.path)
from ops_bias_act import SMALL_SHAPE, TRAINING_SHAPE, bench_bias_act
from ops_upfirdn3d import bench_upfirdn3d

COLUMNS = ['op', 'shape', 'dtype', 'cuda_ms', 'ref_ms', 'ref/cuda']
DTYPE_NAMES = {'fp16': 'float16', 'bf16': 'bfloat16'}


@click.command()
@click.option('--small', is_flag=True, help='Tiny shapes for a CPU smoke run')
@click.option('--iters', default=5, show_default=True, type=click.IntRange(min=1), help='Timed repetitions')
def main(small: bool, iters: int) -> None:
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    rows = bench_upfirdn3d(device, small=small, dtypes=list(DTYPE_NAMES), layouts=['cl'], iters=iters)
    for row in bench_bias_act(device, SMALL_SHAPE if small else TRAINING_SHAPE, list(DTYPE_NAMES.values()),
                              iters=iters):
        dtype = next(short for short, name in DTYPE_NAMES.items() if name == row['dtype'])
        rows.append({'op': 'bias_act lrelu clamp', 'shape': row['shape'], 'dtype': dtype, 'cuda_ms': row['cuda_ms'],
                     'ref_ms': row['ref_ms'], 'ref/cuda': row['ref_over_cuda']})
    print(f'\nCustom ops, forward + backward, channels_last_3d, {device_name(device)}')
    if device.type != 'cuda':
        print('No CUDA device: impl=cuda falls back to the reference, so both columns time the reference.')
    print_table(rows, COLUMNS)


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
