# SPDX-License-Identifier: Apache-2.0
"""Training speed at the prostate high-resolution preset: 256x256x24, stylegan2 configuration, batch 8, R1,
path length, lazy regularisation and ADA (bgc, p = 0.2), on synthetic data.

For each variant (precision x memory format x ops path x torch.compile) it runs whole training iterations (16, so
the lazy R1 and path-length phases fire at their real frequency) after warm-up and reports sec/kimg, peak GPU
memory, the batch_gpu used, the convolution TFLOP/s (counted from the shapes by torch's FLOP counter over one
iteration) and that as a fraction of the conv3d throughput measured on the same GPU at the network's largest
layer shape.

    python benchmarks/train_speed.py --variants=bf16-cl-cuda,fp16-cl-cuda,tf32-cf-cuda,bf16-cl-ref
    python benchmarks/train_speed.py --small        # a quick CPU smoke run at 32x32x16
"""

from __future__ import annotations

import functools
import time

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from common import device_name, print_table, synchronize  # noqa: I001 (puts the repo on sys.path)
import dnnlib
from torch_utils import ops
from training import training_loop
from training.augment import AUGPIPE_SPECS, AugmentPipe
from training.loss import StyleGAN2Loss
from training.networks import Discriminator, Generator
from volumes.contract import parse_size


def parse_variant(text: str) -> dnnlib.EasyDict:
    """'bf16-cl-cuda[-compile]' -> precision, channels_last, impl, compile."""
    parts = text.split('-')
    if len(parts) not in (3, 4) or parts[0] not in ('fp32', 'tf32', 'fp16', 'bf16') or parts[1] not in ('cl', 'cf') \
            or parts[2] not in ('cuda', 'ref') or (len(parts) == 4 and parts[3] != 'compile'):
        raise click.BadParameter(f'"{text}" is not PRECISION-{{cl,cf}}-{{cuda,ref}}[-compile]', param_hint='--variants')
    return dnnlib.EasyDict(name=text, precision=parts[0], channels_last=parts[1] == 'cl', impl=parts[2],
                           compile=len(parts) == 4)


def build(variant, img_shape, batch_gpu: int, small: bool, device: torch.device):
    channel_base, channel_max = (256, 16) if small else (32768, 512)
    fp32 = variant.precision in ('fp32', 'tf32')
    common = dict(c_dim=0, img_shape=img_shape, img_channels=1)
    net = dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=0 if fp32 else 4,
               conv_clamp=None if fp32 else 256, precision='fp16' if fp32 else variant.precision,
               channels_last=variant.channels_last)
    G = Generator(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=8), synthesis_kwargs=net, **common)
    D = Discriminator(**net, epilogue_kwargs=dict(mbstd_group_size=min(4, batch_gpu)), **common)
    G = G.train().requires_grad_(False).to(device)
    D = D.train().requires_grad_(False).to(device)
    pipe = None
    if device.type != 'meta':  # The pipe draws data-dependent parameters; it has no convolutions to count.
        pipe = AugmentPipe(**AUGPIPE_SPECS['bgc']).train().requires_grad_(False).to(device)
        pipe.p.copy_(torch.as_tensor(0.2))
    mapping, synthesis, disc = G.mapping, G.synthesis, D
    if variant.compile:
        mapping, synthesis, disc = torch.compile(mapping), torch.compile(synthesis), torch.compile(D)
    loss = StyleGAN2Loss(device, mapping, synthesis, disc, augment_pipe=pipe, r1_gamma=10)
    opt = dict(class_name='torch.optim.Adam', lr=0.002, betas=[0, 0.99], eps=1e-8)
    phases = training_loop.build_phases(G, D, opt, opt, G_reg_interval=4, D_reg_interval=16)
    return G, phases, loss


def make_iteration(G, phases, loss, batch: int, batch_gpu: int, img_shape, device):
    reals = [torch.rand([batch_gpu, 1, *img_shape], device=device) * 2 - 1 for _ in range(batch // batch_gpu)]
    labels = [torch.zeros([batch_gpu, 0], device=device) for _ in reals]
    state = dict(batch_idx=0)

    def iteration():
        gen_z = [[torch.randn([batch_gpu, G.z_dim], device=device) for _ in reals] for _ in phases]
        gen_c = [labels for _ in phases]
        training_loop.run_phases(phases, loss, [], state['batch_idx'], reals, labels, gen_z, gen_c, None)
        state['batch_idx'] += 1
    return iteration


def conv_throughput(img_shape, channels: int, batch: int, precision: str, channels_last: bool,
                    device: torch.device) -> float:
    """Measured TFLOP/s of a 3x3x3 conv3d (forward) at [batch, channels, D, H, W] in the variant's arithmetic."""
    dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(precision, torch.float32)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    x = torch.randn([batch, channels, *img_shape], device=device, dtype=dtype).contiguous(memory_format=fmt)
    w = torch.randn([channels, channels, 3, 3, 3], device=device, dtype=dtype).contiguous(memory_format=fmt)
    run = lambda: F.conv3d(x, w, padding=1)  # noqa: E731
    for _ in range(3):
        run()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(10):
        run()
    synchronize(device)
    seconds = (time.perf_counter() - start) / 10
    return 2 * batch * channels * channels * 27 * int(np.prod(img_shape)) / seconds / 1e12


class ConvFlopCounter(TorchDispatchMode):
    """Sums torch's FLOP formulas over the convolution ops that run (forward, backward, double backward).

    torch's FlopCounterMode also tracks modules with backward hooks, which fail under the double backward of R1
    and path length; this mode only counts.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry and 'conv' in packet.__name__:
            self.flops += flop_registry[packet](*args, **kwargs, out_val=out)
        return out


def count_conv_flops(iteration) -> float:
    """FLOPs of the convolutions in one iteration, from the shapes of the ops that run."""
    with ConvFlopCounter() as counter:
        iteration()
    return float(counter.flops)


def print_profile(iteration, count: int, device: torch.device, top: int = 25) -> None:
    """The ops that take the most time over `count` iterations (the first includes both regularisers' phases
    only if it is a multiple of 16 and 4; the table is for finding what to fuse, not for totals)."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == 'cuda':
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(count):
            iteration()
        synchronize(device)
    table = prof.key_averages()
    for sort_by in (['self_device_time_total', 'self_cuda_time_total'] if device.type == 'cuda' else []) + \
            ['self_cpu_time_total']:  # Key names differ between torch releases.
        try:
            print(table.table(sort_by=sort_by, row_limit=top, max_name_column_width=60))
            return
        except (AttributeError, KeyError):
            continue


def bench_variant(variant, size: str, batch: int, batch_gpu: int, iters: int, warmup: int, small: bool,
                  device, profile: int = 0) -> dict:
    img_shape = parse_size(size)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = variant.precision == 'tf32'
    torch.backends.cudnn.benchmark = True
    row = dict(variant=variant.name, batch=batch, batch_gpu=batch_gpu)
    with ops.plugins_enabled(variant.impl == 'cuda'):
        G, phases, loss = build(variant, img_shape, batch_gpu, small, device)
        iteration = make_iteration(G, phases, loss, batch, batch_gpu, img_shape, device)
        for _ in range(warmup):  # cuDNN autotuning, compilation; minibatch 0 runs every phase, R1 included.
            iteration()
        synchronize(device)
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        for _ in range(iters):
            iteration()
        synchronize(device)
        sec_per_iter = (time.perf_counter() - start) / iters
        if profile:
            print(f'\nProfile of {variant.name}, {profile} minibatches:')
            print_profile(iteration, profile, device)
    flops = np.mean(cycle_conv_flops(img_shape, batch, batch_gpu, small))  # Same shapes for every variant.
    row['sec_per_kimg'] = sec_per_iter / batch * 1000
    row['peak_mem_gb'] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == 'cuda' else float('nan')
    row['conv_tflops'] = flops / sec_per_iter / 1e12
    top_channels = min(32768 // max(img_shape[1:]), 512) if not small else 16
    peak = conv_throughput(img_shape, top_channels, batch_gpu, variant.precision, variant.channels_last, device)
    row['conv3d_peak_tflops'] = peak
    row['fraction_of_conv3d'] = row['conv_tflops'] / peak
    return row


@functools.lru_cache(maxsize=None)
def cycle_conv_flops(img_shape: tuple[int, int, int], batch: int, batch_gpu: int, small: bool) -> list[float]:
    """Conv FLOPs of each minibatch of one lazy-regularisation cycle, from shapes alone (meta tensors, no GPU
    time)."""
    with torch.device('meta'):
        G, phases, loss = build(parse_variant('bf16-cl-cuda'), img_shape, batch_gpu, small, torch.device('meta'))
        iteration = make_iteration(G, phases, loss, batch, batch_gpu, img_shape, torch.device('meta'))
        return [count_conv_flops(iteration) for _ in range(16)]


def print_flop_count(size: str, batch: int, batch_gpu: int, small: bool) -> None:
    flops = cycle_conv_flops(parse_size(size), batch, batch_gpu, small)
    rows = [dict(minibatch=i, conv_tflop=f / 1e12) for i, f in enumerate(flops)]
    mean = float(np.mean([row['conv_tflop'] for row in rows]))
    print(f'\nConvolution FLOPs per minibatch, {size}, batch {batch} (lazy R1 every 16, path length every 4)\n')
    print_table(rows, ['minibatch', 'conv_tflop'])
    print(f'\nMean {mean:.1f} TFLOP per minibatch; {mean / batch:.2f} TFLOP per volume; '
          f'{mean / batch * 1000 / 1e3:.1f} PFLOP per kimg')


@click.command()
@click.option('--size', default='256x256x24', show_default=True, help='Volume size XxYxZ')
@click.option('--batch', default=8, show_default=True, help='Total batch (one GPU)')
@click.option('--batch-gpu', default=8, show_default=True, help='Chunk per accumulation round')
@click.option('--iters', default=16, show_default=True, help='Timed iterations (16 = one lazy-R1 cycle)')
@click.option('--warmup', default=3, show_default=True, help='Untimed iterations first')
@click.option('--variants', default='bf16-cl-cuda,fp16-cl-cuda,tf32-cf-cuda,bf16-cl-ref', show_default=True,
              help='Comma-separated PRECISION-{cl,cf}-{cuda,ref}[-compile]')
@click.option('--small', is_flag=True, help='Tiny network at 32x32x16, batch 2, for a CPU smoke run')
@click.option('--count-flops', is_flag=True, help='Only count the conv FLOPs per minibatch (meta device, no GPU)')
@click.option('--profile', default=0, show_default=True, help='Profile this many minibatches of the first variant')
def main(size: str, batch: int, batch_gpu: int, iters: int, warmup: int, variants: str, small: bool,
         count_flops: bool, profile: int) -> None:
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if small:
        size, batch, batch_gpu, iters = '32x32x16', 2, 2, 2
    if count_flops:
        print_flop_count(size, batch, batch_gpu, small)
        return
    rows = []
    for index, text in enumerate(variants.split(',')):
        variant = parse_variant(text)
        try:
            rows.append(bench_variant(variant, size, batch, batch_gpu, iters, warmup, small, device,
                                      profile=profile if index == 0 else 0))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as e:
            rows.append(dict(variant=variant.name, batch=batch, batch_gpu=batch_gpu, note=str(e).split('\n')[0][:80]))
            if device.type == 'cuda':
                torch.cuda.empty_cache()
    print(f'\nTraining speed, {size}, batch {batch}, {device_name(device)}\n')
    print_table(rows, ['variant', 'batch', 'batch_gpu', 'sec_per_kimg', 'peak_mem_gb', 'conv_tflops',
                       'conv3d_peak_tflops', 'fraction_of_conv3d', 'note'])


if __name__ == '__main__':
    main()
