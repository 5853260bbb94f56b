# SPDX-License-Identifier: Apache-2.0
"""CPU training speed and peak memory of this project's reference path against fedorukol/3d-stylegan2-ada.

    git clone https://github.com/fedorukol/3d-stylegan2-ada /tmp/peer     # never copied into this repository
    python benchmarks/peer_compare.py --peer /tmp/peer
    python benchmarks/peer_compare.py --profile ours --cubes 32 --batches 2 --iters 2   # torch.profiler table

Both projects build G and D at the same widths (channel_base, channel_max, z/w dim, mapping depth; defaults are
this project's `demo` preset, the network a CPU user trains) and shapes (32^3 and 64^3 cubes, batch 1 and 2),
full precision, no augmentation, the default architectures of both (G skip, D resnet, minibatch-stddev group
min(4, batch)). One G+D training iteration is the same four phases for both, written here with each project's
G.mapping, G.synthesis and D (neither project's loss class, so the phases are identical):

  1. Gmain: G(z) -> D -> softplus(-logits), backward.
  2. Gpl: path-length penalty on max(batch // 2, 1) samples (gradient w.r.t. ws with create_graph, backward:
     double backward through G).
  3. Dgen: D(G(z) without grad) -> softplus(logits), backward.
  4. Dreal + R1: D(reals) -> softplus(-logits) + gamma/2 * |grad_reals D|^2, backward (double backward through D).

Every (project, shape, batch) runs in a fresh subprocess (so peak RSS is its own) with one thread, one warm-up
iteration and --iters timed ones; per iteration it records process CPU time (time.process_time) and wall time;
peak RSS is the process's ru_maxrss at the end (Python, torch, both networks, the optimiser-free iteration).
Subprocesses alternate project by project over --rounds rounds, so drift in the machine's speed hits both.
The table gives min / median / max over all timed iterations of all rounds; the ratios compare medians.

What cannot be matched: the peer handles only cubes of a power of two (so the 256x256x24 row is this project
alone, as peak RSS per volume) and its equalised-lr gain of Conv3dLayer and ToRGBLayer uses k^2 instead of k^3
(a scale, not a cost). The peer's dnnlib imports `requests` for downloads it never makes here; when that package
is missing, the peer's subprocess gets an empty stand-in module.

The last line sums it up: `peer ratio: speed <S>x, memory <M>x`, S = the peer's median iteration CPU time over
this project's and M = this project's peak RSS over the peer's, both at 32^3, batch 2.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

import click

from volumes.contract import format_size, parse_size

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
RESULT_TAG = 'PEER_COMPARE_RESULT '

#----------------------------------------------------------------------------
# Child side: one project, one shape, one batch.


def _import_networks(project: str, root: str):
    """The Generator and Discriminator classes of `project` ('ours' or 'peer') from the checkout at `root`."""
    sys.path.insert(0, root)
    if project == 'peer':
        try:
            import requests  # noqa: F401
        except ImportError:
            sys.modules['requests'] = types.ModuleType('requests')  # Only used by the peer for downloads.
    from training.networks import Discriminator, Generator
    return Generator, Discriminator


def _build(project: str, root: str, shape: tuple[int, int, int], batch: int, widths: dict):
    """G and D of one project, in training mode, at the given widths; shape is (D, H, W)."""
    Generator, Discriminator = _import_networks(project, root)
    net = dict(channel_base=widths['channel_base'], channel_max=widths['channel_max'], num_fp16_res=0,
               conv_clamp=None)
    mapping = dict(num_layers=widths['map'])
    epilogue = dict(mbstd_group_size=min(4, batch))
    if project == 'peer':
        if len(set(shape)) != 1:
            raise click.ClickException('the peer builds only cubes')
        size = dict(img_resolution=shape[0])
    else:
        size = dict(img_shape=shape)
    G = Generator(z_dim=widths['z_dim'], c_dim=0, w_dim=widths['w_dim'], img_channels=1, mapping_kwargs=mapping,
                  synthesis_kwargs=dict(architecture='skip', **net), **size)
    D = Discriminator(c_dim=0, img_channels=1, architecture='resnet', epilogue_kwargs=epilogue, **net, **size)
    return G.train(), D.train()


def _iteration(G, D, reals, batch: int, z_dim: int, r1_gamma: float = 1.0) -> None:
    """One G+D training iteration (the four phases of the module docstring); gradients accumulate in .grad."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    c = torch.zeros([batch, 0])
    for param in list(G.parameters()) + list(D.parameters()):
        param.grad = None

    with torch.autograd.profiler.record_function('Gmain'):
        F.softplus(-D(G(torch.randn([batch, z_dim]), c), c)).mean().backward()

    with torch.autograd.profiler.record_function('Gpl'):
        pl_batch = max(batch // 2, 1)
        ws = G.mapping(torch.randn([pl_batch, z_dim]), c[:pl_batch])
        img = G.synthesis(ws)
        noise = torch.randn_like(img) / np.sqrt(np.prod(img.shape[2:]))
        grads, = torch.autograd.grad([(img * noise).sum()], [ws], create_graph=True)
        lengths = grads.square().sum(2).mean(1).sqrt()
        ((lengths - lengths.detach().mean()).square().mean() * 2 + img[:, 0, 0, 0, 0].mean() * 0).backward()

    with torch.autograd.profiler.record_function('Dgen'):
        with torch.no_grad():
            fakes = G(torch.randn([batch, z_dim]), c)
        F.softplus(D(fakes, c)).mean().backward()

    with torch.autograd.profiler.record_function('Dreal_r1'):
        x = reals.detach().requires_grad_(True)
        logits = D(x, c)
        grads, = torch.autograd.grad([logits.sum()], [x], create_graph=True)
        r1 = grads.square().sum(dim=[1, 2, 3, 4]) * (r1_gamma / 2)
        (F.softplus(-logits).squeeze(1) + r1).mean().backward()


def _rss_now_mb() -> float:
    with open('/proc/self/status', encoding='ascii') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1]) / 1024
    return float('nan')


def run_child(project: str, root: str, shape: tuple[int, int, int], batch: int, iters: int, widths: dict,
              seed: int = 0) -> dict:
    """Build, warm up once, time `iters` iterations; the measurements as a dict."""
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    G, D = _build(project, root, shape, batch, widths)
    reals = torch.rand([batch, 1, *shape]) * 2 - 1
    rss_built = _rss_now_mb()
    _iteration(G, D, reals, batch, widths['z_dim'])
    cpu, wall = [], []
    for _ in range(iters):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        _iteration(G, D, reals, batch, widths['z_dim'])
        cpu.append(time.process_time() - cpu0)
        wall.append(time.perf_counter() - wall0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB.
    return dict(project=project, shape=list(shape), batch=batch, cpu=cpu, wall=wall, peak_mb=peak_mb,
                rss_built_mb=rss_built)

def profile_child(project: str, root: str, shape: tuple[int, int, int], batch: int, iters: int, widths: dict,
                  rows: int = 15) -> None:
    """torch.profiler over `iters` iterations after one warm-up: the top operators by self CPU time."""
    import torch
    from torch.profiler import ProfilerActivity, profile
    torch.set_num_threads(1)
    torch.manual_seed(0)
    G, D = _build(project, root, shape, batch, widths)
    reals = torch.rand([batch, 1, *shape]) * 2 - 1
    _iteration(G, D, reals, batch, widths['z_dim'])
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            _iteration(G, D, reals, batch, widths['z_dim'])
    print(prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=rows, max_name_column_width=44))

#----------------------------------------------------------------------------
# Parent side: interleaved subprocesses and the table.


def _spawn(project: str, root: str, shape, batch: int, iters: int, widths: dict, timeout: float) -> dict:
    args = [sys.executable, os.path.abspath(__file__), '--child', project, '--root', root,
            '--shape', format_size(shape), '--batch', str(batch), '--iters', str(iters),
            '--widths', json.dumps(widths)]
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise click.ClickException(f'{project} {shape} batch {batch} failed (exit {proc.returncode}):\n'
                               f'{proc.stderr[-3000:]}')


def _stats(values: list[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def _fmt3(values: list[float], scale: float = 1, digits: int = 3) -> str:
    lo, mid, hi = _stats(values)
    return f'{lo * scale:.{digits}g} / {mid * scale:.{digits}g} / {hi * scale:.{digits}g}'


def _merge(runs: list[dict]) -> dict:
    """All timed iterations of all rounds of one (project, shape, batch)."""
    return dict(cpu=[t for r in runs for t in r['cpu']], wall=[t for r in runs for t in r['wall']],
                peak=[r['peak_mb'] for r in runs], built=[r['rss_built_mb'] for r in runs])


def _load() -> str:
    with open('/proc/loadavg', encoding='ascii') as f:
        return ' '.join(f.read().split()[:3])


def compare(peer: str, ours: str, cubes: list[int], batches: list[int], rounds: int, iters: int, widths: dict,
            large: bool, timeout: float) -> str:
    """Run everything, print the tables; return the summary line."""
    configs = [((r, r, r), b) for r in cubes for b in batches]
    results: dict[tuple, dict[str, list[dict]]] = {(s, b): {'ours': [], 'peer': []} for s, b in configs}
    print(f'load average before: {_load()}', flush=True)
    for rnd in range(rounds):
        for shape, batch in configs:
            # Alternate which project goes first, so neither always runs on a freshly idle machine.
            order = ('ours', 'peer') if rnd % 2 == 0 else ('peer', 'ours')
            for project in order:
                root = ours if project == 'ours' else peer
                result = _spawn(project, root, shape, batch, iters, widths, timeout)
                results[(shape, batch)][project].append(result)
                print(f'round {rnd + 1}/{rounds} {project} {shape[0]}^3 batch {batch}: cpu '
                      f'{statistics.median(result["cpu"]):.3f} s/it, peak {result["peak_mb"]:.0f} MB', flush=True)
    print(f'load average after: {_load()}\n')

    print('| shape | batch | project | CPU s/iter min / med / max | wall s/iter min / med / max | '
          'peak RSS MB min / med / max | RSS before training MB |')
    print('|---|---|---|---|---|---|---|')
    summary = {}
    for shape, batch in configs:
        merged = {p: _merge(results[(shape, batch)][p]) for p in ('ours', 'peer')}
        for project in ('ours', 'peer'):
            m = merged[project]
            print(f'| {shape[0]}^3 | {batch} | {project} | {_fmt3(m["cpu"])} | {_fmt3(m["wall"])} | '
                  f'{_fmt3(m["peak"], digits=4)} | {statistics.median(m["built"]):.0f} |')
        speed = statistics.median(merged['peer']['cpu']) / statistics.median(merged['ours']['cpu'])
        wall = statistics.median(merged['peer']['wall']) / statistics.median(merged['ours']['wall'])
        memory = statistics.median(merged['ours']['peak']) / statistics.median(merged['peer']['peak'])
        summary[(shape[0], batch)] = (speed, wall, memory)
    print('\n| shape | batch | speed-up CPU (peer / ours) | speed-up wall | peak RSS ours / peer |')
    print('|---|---|---|---|---|')
    for (res, batch), (speed, wall, memory) in summary.items():
        print(f'| {res}^3 | {batch} | {speed:.2f}x | {wall:.2f}x | {memory:.2f}x |')

    if large:
        print('\nThis project alone at 256x256x24 (the peer builds only cubes), 1 timed iteration:\n')
        print('| shape | batch | CPU s/iter | peak RSS MB | RSS before training MB | peak RSS per volume MB '
              '(peak - before) / batch |')
        print('|---|---|---|---|---|---|')
        for batch in batches:
            r = _spawn('ours', ours, (24, 256, 256), batch, 1, widths, timeout)
            print(f'| 256x256x24 | {batch} | {r["cpu"][0]:.2f} | {r["peak_mb"]:.0f} | {r["rss_built_mb"]:.0f} | '
                  f'{(r["peak_mb"] - r["rss_built_mb"]) / batch:.0f} |', flush=True)

    # 32^3 batch 2, else the smallest cube at its largest batch.
    key = (32, 2) if (32, 2) in summary else min(summary, key=lambda k: (k[0], -k[1]))
    line = f'peer ratio: speed {summary[key][0]:.2f}x, memory {summary[key][2]:.2f}x'
    if key != (32, 2):
        line += f' (at {key[0]}^3 batch {key[1]}; 32^3 batch 2 was not run)'
    print()
    print(line)
    return line


@click.command()
@click.option('--peer', type=click.Path(exists=True, file_okay=False), help='A checkout of fedorukol/3d-stylegan2-ada')
@click.option('--ours', type=click.Path(exists=True, file_okay=False), default=REPO, show_default=True,
              help='The checkout of this project to measure')
@click.option('--cubes', default='32,64', show_default=True, help='Cube sizes')
@click.option('--batches', default='1,2', show_default=True, help='Batch sizes')
@click.option('--rounds', default=3, show_default=True, help='Interleaved rounds of subprocesses')
@click.option('--iters', default=3, show_default=True, help='Timed iterations per subprocess (after 1 warm-up)')
@click.option('--channel-base', default=512, show_default=True)
@click.option('--channel-max', default=32, show_default=True)
@click.option('--z-dim', default=64, show_default=True, help='z and w size')
@click.option('--map', 'map_layers', default=2, show_default=True, help='Mapping layers')
@click.option('--large/--no-large', default=True, show_default=True, help='The 256x256x24 row (this project only)')
@click.option('--timeout', default=1800.0, show_default=True, help='Seconds allowed per subprocess')
@click.option('--profile', 'profile_project', type=click.Choice(['ours', 'peer']),
              help='Instead of the comparison: torch.profiler top operators of one project, first cube, last batch')
@click.option('--child', type=click.Choice(['ours', 'peer']), hidden=True)
@click.option('--root', hidden=True)
@click.option('--shape', hidden=True)
@click.option('--batch', type=int, hidden=True)
@click.option('--widths', hidden=True)
def main(peer, ours, cubes, batches, rounds, iters, channel_base, channel_max, z_dim, map_layers, large, timeout,
         profile_project, child, root, shape, batch, widths):
    if profile_project:
        root = ours if profile_project == 'ours' else peer
        if root is None:
            raise click.UsageError('--profile peer needs --peer DIR')
        res, batch = int(cubes.split(',')[0]), int(batches.split(',')[-1])
        widths = dict(channel_base=channel_base, channel_max=channel_max, z_dim=z_dim, w_dim=z_dim, map=map_layers)
        print(f'{profile_project}, {res}^3, batch {batch}, {iters} iterations, 1 thread, load average {_load()}')
        profile_child(profile_project, os.path.abspath(root), (res, res, res), batch, iters, widths)
        return
    if child:
        shape = parse_size(shape)
        result = run_child(child, root, shape, batch, iters, json.loads(widths))
        print(RESULT_TAG + json.dumps(result), flush=True)
        return
    if peer is None:
        raise click.UsageError('--peer DIR (a checkout of fedorukol/3d-stylegan2-ada) is required')
    widths = dict(channel_base=channel_base, channel_max=channel_max, z_dim=z_dim, w_dim=z_dim, map=map_layers)
    print(f'peer_compare: {time.strftime("%Y-%m-%d %H:%M")}, {os.cpu_count()} CPUs, 1 thread per process, '
          f'widths {widths}, {rounds} rounds x {iters} timed iterations')
    compare(os.path.abspath(peer), os.path.abspath(ours), [int(c) for c in cubes.split(',')],
            [int(b) for b in batches.split(',')], rounds, iters, widths, large, timeout)


if __name__ == '__main__':
    main()
