# SPDX-License-Identifier: Apache-2.0
"""Peak GPU memory and time of the high-resolution networks, forward + backward, G then D, with the CUDA ops.

The prostate high-resolution networks (256x256x24, stylegan2 configuration) at batch 2 in fp16 and bf16
(channels_last_3d, top 4 blocks reduced): G maps z to volumes and back-propagates a sum; D scores real volumes and
back-propagates its R1 penalty (the double backward the training needs).

    python benchmarks/network_memory.py                 # on the GPU
    python benchmarks/network_memory.py --small         # a quick CPU smoke run at 32x32x16
"""

from __future__ import annotations

import click
import torch

from common import device_name, print_table, time_fn  # noqa: I001 (puts the repo on sys.path)
from training.networks import Discriminator, Generator
from volumes.contract import parse_size


def build(size: str, precision: str, small: bool, device: torch.device):
    net = dict(channel_base=256 if small else 32768, channel_max=16 if small else 512, num_fp16_res=4,
               conv_clamp=256, precision=precision, channels_last=device.type == 'cuda')
    common = dict(c_dim=0, img_shape=parse_size(size), img_channels=1)
    G = Generator(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=net, **common)
    D = Discriminator(**net, **common)
    return G.train().to(device), D.train().to(device)


def generator_step(G, batch: int, device: torch.device) -> None:
    z = torch.randn([batch, G.z_dim], device=device)
    G(z, torch.zeros([batch, 0], device=device)).sum().backward()


def discriminator_r1_step(D, batch: int, device: torch.device) -> None:
    x = torch.randn([batch, 1, *D.img_shape], device=device, requires_grad=True)
    logits = D(x, torch.zeros([batch, 0], device=device))
    grad, = torch.autograd.grad(logits.sum(), [x], create_graph=True)
    (logits.mean() + grad.square().sum()).backward()


def measure(step, device: torch.device) -> dict:
    if device.type == 'cuda':
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    seconds = time_fn(step, device, warmup=2, iters=3)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else float('nan')
    return dict(seconds=seconds, peak_mem_gb=peak)


def measure_precision(size: str, precision: str, batch: int, small: bool, device: torch.device) -> list[dict]:
    G, D = build(size, precision, small, device)
    rows = []
    for name, step in [('G forward + backward', lambda: generator_step(G, batch, device)),
                       ('D forward + R1 double backward', lambda: discriminator_r1_step(D, batch, device))]:
        try:
            rows.append(dict(network=name, precision=precision, batch=batch, **measure(step, device)))
        except torch.cuda.OutOfMemoryError:
            rows.append(dict(network=name, precision=precision, batch=batch, note='out of memory'))
    return rows


@click.command()
@click.option('--size', default='256x256x24', show_default=True, help='Volume size XxYxZ')
@click.option('--batch', default=2, show_default=True, help='Volumes per step')
@click.option('--precisions', default='fp16,bf16', show_default=True, help='Reduced precision of the top 4 blocks')
@click.option('--small', is_flag=True, help='Tiny networks at 32x32x16 for a CPU smoke run')
def main(size: str, batch: int, precisions: str, small: bool) -> None:
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if small:
        size = '32x32x16'
    torch.backends.cudnn.benchmark = True
    rows = [row for precision in precisions.split(',') for row in measure_precision(size, precision, batch, small,
                                                                                       device)]
    print(f'\nNetworks at {size}, {device_name(device)}\n')
    print_table(rows, ['network', 'precision', 'batch', 'seconds', 'peak_mem_gb', 'note'])


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
