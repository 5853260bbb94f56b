# SPDX-License-Identifier: Apache-2.0
"""Generation speed: volumes per second of G_ema at 256x256x24 (stylegan2 configuration) for batch sizes 1-32.

    python benchmarks/generate_speed.py                   # on the GPU, the full table
    python benchmarks/generate_speed.py --small           # a quick CPU smoke run at 32x32x16
"""

from __future__ import annotations

import click
import torch

from common import device_name, print_table, time_fn  # noqa: I001 (puts the repo on sys.path)
from training.networks import Generator
from volumes.contract import parse_size


def build_generator(size: str, precision: str, channels_last: bool, small: bool, device: torch.device):
    channel_base, channel_max = (256, 16) if small else (32768, 512)
    fp32 = precision in ('fp32', 'tf32')
    G = Generator(z_dim=512, w_dim=512, c_dim=0, img_shape=parse_size(size), img_channels=1,
                  mapping_kwargs=dict(num_layers=8),
                  synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max,
                                        num_fp16_res=0 if fp32 else 4, conv_clamp=None if fp32 else 256,
                                        precision='fp16' if fp32 else precision, channels_last=channels_last))
    return G.eval().requires_grad_(False).to(device)


@click.command()
@click.option('--size', default='256x256x24', show_default=True, help='Volume size XxYxZ')
@click.option('--batches', default='1,2,4,8,16,32', show_default=True, help='Batch sizes')
@click.option('--precisions', default='bf16,fp16,tf32', show_default=True, help='Arithmetic variants')
@click.option('--small', is_flag=True, help='Tiny network at 32x32x16 for a CPU smoke run')
def main(size: str, batches: str, precisions: str, small: bool) -> None:
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if small:
        size, batches = '32x32x16', '1,2'
    rows = []
    for precision in precisions.split(','):
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == 'tf32'
        torch.backends.cudnn.benchmark = True
        G = build_generator(size, precision, channels_last=device.type == 'cuda', small=small, device=device)
        for batch in map(int, batches.split(',')):
            z = torch.randn([batch, G.z_dim], device=device)
            c = torch.zeros([batch, 0], device=device)
            try:
                seconds = time_fn(lambda: G(z, c, noise_mode='const'), device, warmup=2, iters=5)
            except torch.cuda.OutOfMemoryError:
                rows.append(dict(precision=precision, batch=batch, note='out of memory'))
                torch.cuda.empty_cache()
                continue
            peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else float('nan')
            rows.append(dict(precision=precision, batch=batch, sec_per_batch=seconds, volumes_per_sec=batch / seconds,
                             peak_mem_gb=peak))
            if device.type == 'cuda':
                torch.cuda.reset_peak_memory_stats(device)
    print(f'\nGeneration speed, {size}, {device_name(device)}\n')
    print_table(rows, ['precision', 'batch', 'sec_per_batch', 'volumes_per_sec', 'peak_mem_gb', 'note'])


if __name__ == '__main__':
    main()
