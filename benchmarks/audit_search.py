# SPDX-License-Identifier: Apache-2.0
"""Speed of the audit's nearest-neighbour search, and the recall of its pooled prefilter.

    python benchmarks/audit_search.py                    # 400 training, 800 generated phantoms at 64x64x12, CPU
    python benchmarks/audit_search.py --plan-only        # the arithmetic of the GPU plan (no timing)
    python benchmarks/audit_search.py --device=cuda --train=5000 --generated=10000 --size=256x256x24 --data=smooth

The training set is phantoms (volumes/phantom.py, stored as uint8); the generated set is other phantoms with 10%
planted copies of training cases (noise, an intensity change, a one-voxel shift, the x-mirror). Phantoms resemble
each other closely (nearest-training correlations around 0.9 at 64x64x12), which is the hard case for a prefilter:
the exact nearest case of a novel volume has many rivals. Every search uses shifts of up to 1 voxel and the mirror
(54 variants). Rows: the exact search over every training case, and the prefilter (volumes average-pooled to at most
32 voxels per axis, shifts of one pooled voxel and the mirror; then the exact correlation of the K best candidates);
recall is the
fraction of generated volumes whose nearest training case the prefilter finds, for novel volumes and for the
planted copies, and the largest similarity it misses by.

The plan for 5,000 training and 10,000 generated volumes at 256x256x24 counts the multiply-adds and bytes of both
ways and converts them to time at stated throughputs; run the last command above on the GPU to measure it.
"""

from __future__ import annotations

import time

import click
import numpy as np
import torch
import torch.nn.functional as F

from common import device_name, load_average, print_table  # noqa: I001 (puts the repo on sys.path)
from metrics.memorization.search import POOLED_SIZE, VoxelIndex, shift_offsets
from volumes import phantom
from volumes.contract import dhw_to_xyz, format_size, parse_size, xyz_to_dhw

PLANTED = ('noise', 'intensity', 'shift', 'mirror')


def phantoms(seeds: range, size_xyz: tuple[int, int, int]) -> np.ndarray:
    """uint8 phantoms [N, 1, D, H, W]."""
    return np.stack([np.clip(phantom.make_phantom(s, size_xyz)[0] / 1.2 * 255, 0, 255).astype(np.uint8)[None]
                     for s in seeds])


def smooth_volumes(count: int, size_xyz: tuple[int, int, int], seed: int,
                   device: torch.device = torch.device('cpu')) -> np.ndarray:
    """uint8 [N, 1, D, H, W] random smooth fields (coarse noise, trilinearly up-sampled): quick to make at any size,
    for timing where phantoms would take long to draw (their correlations are lower, so recall is measured on
    phantoms)."""
    gen = torch.Generator().manual_seed(seed)
    D, H, W = xyz_to_dhw(size_xyz)
    out = np.empty([count, 1, D, H, W], dtype=np.uint8)
    for start in range(0, count, 64):
        n = min(64, count - start)
        coarse = torch.randn([n, 1, max(D // 4, 2), max(H // 16, 2), max(W // 16, 2)], generator=gen).to(device)
        fine = F.interpolate(coarse, size=(D, H, W), mode='trilinear', align_corners=False)
        out[start:start + n] = (fine * 50 + 128).clamp(0, 255).to(torch.uint8).cpu().numpy()
    return out


def plant(volume: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    v = volume.astype(np.float32)
    v = {'noise': lambda: v + rng.normal(0, 10, v.shape), 'intensity': lambda: v * 0.8 + 25,
         'shift': lambda: np.roll(v, 1, axis=-1), 'mirror': lambda: v[..., ::-1]}[kind]()
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def timed_search(index: VoxelIndex, generated: torch.Tensor, batch: int, device: torch.device):
    start = time.perf_counter()
    parts = [index.search(generated[i:i + batch].to(device)) for i in range(0, len(generated), batch)]
    if device.type == 'cuda':
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    return seconds, np.concatenate([p.index for p in parts]), np.concatenate([p.similarity for p in parts])

#----------------------------------------------------------------------------
# The plan.


def plan(train: int, generated: int, size_dhw: tuple[int, int, int], k: int, shift: int = 1) -> list[dict]:
    """Floating-point operations, bytes and the times they take at stated rates, for the exact search and the
    prefilter (both with the mirror)."""
    variants = 2 * len(shift_offsets(shift))
    interior = int(np.prod([s - 2 * shift for s in size_dhw]))
    pooled = [s // max(1, s // POOLED_SIZE) for s in size_dhw]
    coarse_interior = int(np.prod([s - 2 for s in pooled]))
    rows_gb = train * interior * 4 / 1e9
    windows = generated * variants * interior * 4 * 2  # Every query's windows written and read once, float32.
    exact = 2.0 * variants * generated * train * interior
    coarse = 2.0 * variants * generated * train * coarse_interior
    candidates = 2.0 * variants * generated * k * interior
    gathered = generated * k * interior * 4 * 2  # Candidate rows gathered (written, read), float32.
    rows = [dict(stage=f'exact: {variants} variants x every training case ({rows_gb:.0f} GB of rows kept)',
                 flop=exact, bytes=windows),
            dict(stage=f'prefilter: pooled {format_size(pooled)}, {variants} variants x every case',
                 flop=coarse),
            dict(stage=f'prefilter: exact, {variants} variants x K={k} candidates', flop=candidates,
                 bytes=gathered + windows)]
    for row in rows:
        row['TFLOP'] = row['flop'] / 1e12
        row['s at 50 TFLOP/s (FP32)'] = row['flop'] / 50e12
        row['GB moved'] = row.get('bytes', 0) / 1e9
        row['s at 2 TB/s'] = row.get('bytes', 0) / 2e12
    return rows


@click.command()
@click.option('--train', 'num_train', type=int, default=400, show_default=True, help='Training volumes')
@click.option('--generated', 'num_generated', type=int, default=800, show_default=True, help='Generated volumes')
@click.option('--size', default='64x64x12', show_default=True, help='Volume size XxYxZ')
@click.option('--k', type=int, default=16, show_default=True, help='Prefilter candidates')
@click.option('--batch', type=int, default=8, show_default=True, help='Generated volumes per search')
@click.option('--device', default='cpu', show_default=True)
@click.option('--data', 'kind', type=click.Choice(['phantom', 'smooth']), default='phantom', show_default=True,
              help='Volumes: phantoms, or random smooth fields (quick to make at 256x256x24)')
@click.option('--skip-exact', is_flag=True, help='Time the prefilter only (no recall)')
@click.option('--plan-only', is_flag=True, help='Print the plan for 5000 x 10000 at 256x256x24 and stop')
def main(num_train: int, num_generated: int, size: str, k: int, batch: int, device: str, kind: str,
         skip_exact: bool, plan_only: bool) -> None:
    print('Plan: 5000 training and 10000 generated volumes at 256x256x24, shifts of 1 voxel and the mirror (54 '
          'variants)\n')
    print_table(plan(5000, 10000, (24, 256, 256), k), ['stage', 'TFLOP', 's at 50 TFLOP/s (FP32)', 'GB moved',
                                                       's at 2 TB/s'])
    if plan_only:
        return
    size_xyz = dhw_to_xyz(parse_size(size))
    start = time.perf_counter()
    device = torch.device(device)
    make = phantoms if kind == 'phantom' else lambda seeds, size: smooth_volumes(len(seeds), size, seeds.start, device)
    train = make(range(num_train), size_xyz)
    rng = np.random.default_rng(0)
    copies = num_generated // 10
    novel = make(range(100_000, 100_000 + num_generated - copies), size_xyz)
    sources = rng.choice(num_train, size=copies, replace=False)
    planted = np.stack([plant(train[s], PLANTED[i % 4], rng) for i, s in enumerate(sources)])
    generated = torch.from_numpy(np.concatenate([novel, planted]))
    made = time.perf_counter() - start
    print(f'\n{num_train} training and {num_generated} generated {kind} volumes ({copies} planted copies) at {size} on '
          f'{device_name(device)}, {torch.get_num_threads()} threads, load average {load_average()} (made in '
          f'{made:.0f} s)\n')
    store = torch.from_numpy(train).to(device)
    rows = []
    exact_index = exact_similarity = None
    if not skip_exact:
        seconds, exact_index, exact_similarity = timed_search(VoxelIndex(store, 1, True), generated, batch, device)
        rows.append(dict(search='exact', seconds=seconds, **{'generated/s': num_generated / seconds}))
        assert np.array_equal(exact_index[len(novel):], sources), 'the exact search missed a planted copy'
    start = time.perf_counter()
    index = VoxelIndex(store, 1, True, prefilter=k)
    build = time.perf_counter() - start
    seconds, index_k, similarity_k = timed_search(index, generated, batch, device)
    row = dict(search=f'prefilter K={k}', seconds=seconds + build, **{'generated/s': num_generated / (seconds + build)})
    if exact_index is not None:
        hit = index_k == exact_index
        row.update({'recall novel': float(hit[:len(novel)].mean()), 'recall copies': float(hit[len(novel):].mean()),
                    'max similarity missed': float(np.max(exact_similarity - similarity_k))})
    rows.append(row)
    print_table(rows, ['search', 'seconds', 'generated/s', 'recall novel', 'recall copies', 'max similarity missed'])


if __name__ == '__main__':
    main()
