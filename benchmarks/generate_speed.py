# SPDX-License-Identifier: Apache-2.0
"""Generation speed: volumes per second of G_ema for a range of batch sizes.

On the GPU: 256x256x24, stylegan2 configuration, batch 1-32, per arithmetic variant. On the CPU (--device cpu):
the network of the `demo` preset (the one a CPU user trains: channel_base 512, channel_max 32, z/w 64, 2
mapping layers) at 32x32x16 and 64x64x24, batch 1-16, float32, with --threads threads (default 1, so the numbers
do not depend on what else runs on the machine).

    python benchmarks/generate_speed.py                   # on the GPU, the full table
    python benchmarks/generate_speed.py --device cpu      # the CPU table
    python benchmarks/generate_speed.py --small           # a quick smoke run at 32x32x16
"""

from __future__ import annotations

import time

import click
import torch

from common import device_name, load_average, print_table, time_fn  # noqa: I001 (puts the repo on sys.path)
from training.networks import Generator
from volumes.contract import parse_size

CPU_NET = dict(channel_base=512, channel_max=32, z_dim=64, map=2)  # configs/demo.toml
GPU_NET = dict(channel_base=32768, channel_max=512, z_dim=512, map=8)
SMALL_NET = dict(channel_base=256, channel_max=16, z_dim=512, map=8)


def build_generator(size: str, precision: str, channels_last: bool, net: dict, device: torch.device):
    fp32 = precision in ('fp32', 'tf32')
    G = Generator(z_dim=net['z_dim'], w_dim=net['z_dim'], c_dim=0, img_shape=parse_size(size), img_channels=1,
                  mapping_kwargs=dict(num_layers=net['map']),
                  synthesis_kwargs=dict(channel_base=net['channel_base'], channel_max=net['channel_max'],
                                        num_fp16_res=0 if fp32 else 4, conv_clamp=None if fp32 else 256,
                                        precision='fp16' if fp32 else precision, channels_last=channels_last))
    return G.eval().requires_grad_(False).to(device)


@click.command()
@click.option('--device', 'device_name_', type=click.Choice(['auto', 'cuda', 'cpu']), default='auto',
              show_default=True, help='auto: the GPU when there is one')
@click.option('--sizes', help='Volume sizes XxYxZ, comma-separated [GPU: 256x256x24; CPU: 32x32x16,64x64x24]')
@click.option('--batches', help='Batch sizes [GPU: 1,2,4,8,16,32; CPU: 1,2,4,8,16]')
@click.option('--precisions', default='bf16,fp16,tf32', show_default=True, help='Arithmetic variants (GPU)')
@click.option('--threads', default=1, show_default=True, help='CPU threads')
@click.option('--iters', default=5, show_default=True, help='Timed calls per batch size (median reported)')
@click.option('--small', is_flag=True, help='Tiny network at 32x32x16, batch 1-2, for a smoke run')
def main(device_name_: str, sizes: str | None, batches: str | None, precisions: str, threads: int, iters: int,
         small: bool) -> None:
    if device_name_ == 'auto':
        device_name_ = 'cuda' if torch.cuda.is_available() else 'cpu'
    device = torch.device(device_name_)
    on_cpu = device.type == 'cpu'
    net = SMALL_NET if small else (CPU_NET if on_cpu else GPU_NET)
    if on_cpu:
        torch.set_num_threads(threads)
        precisions = 'fp32'  # Reduced precision runs only on CUDA.
    sizes = sizes or ('32x32x16' if small else '32x32x16,64x64x24' if on_cpu else '256x256x24')
    batches = batches or ('1,2' if small else '1,2,4,8,16' if on_cpu else '1,2,4,8,16,32')
    rows = []
    for size in sizes.split(','):
        for precision in precisions.split(','):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == 'tf32'
            torch.backends.cudnn.benchmark = True
            torch.manual_seed(0)
            G = build_generator(size, precision, channels_last=not on_cpu, net=net, device=device)
            for batch in map(int, batches.split(',')):
                z = torch.randn([batch, G.z_dim], device=device)
                c = torch.zeros([batch, 0], device=device)
                try:
                    seconds = time_fn(lambda: G(z, c, noise_mode='const'), device, warmup=2, iters=iters)
                except torch.cuda.OutOfMemoryError:
                    rows.append(dict(size=size, precision=precision, batch=batch, note='out of memory'))
                    torch.cuda.empty_cache()
                    continue
                peak = torch.cuda.max_memory_allocated(device) / 2**30 if not on_cpu else float('nan')
                rows.append(dict(size=size, precision=precision, batch=batch, sec_per_batch=seconds,
                                 volumes_per_sec=batch / seconds, peak_mem_gb=peak))
                if not on_cpu:
                    torch.cuda.reset_peak_memory_stats(device)
    where = device_name(device) + (f', {threads} thread(s)' if on_cpu else '')
    print(f'\nGeneration speed, {where}, {time.strftime("%Y-%m-%d")}, load average {load_average()}\n')
    columns = ['size', 'precision', 'batch', 'sec_per_batch', 'volumes_per_sec'] + ([] if on_cpu else ['peak_mem_gb'])
    print_table(rows, columns + ['note'])


if __name__ == '__main__':
    main()
