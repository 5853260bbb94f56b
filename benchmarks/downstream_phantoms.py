# SPDX-License-Identifier: Apache-2.0
"""downstream.py on labelled phantoms at a larger scale than the tests: more cases, steps, seeds and real fractions.

    python benchmarks/downstream_phantoms.py --outdir=bench-downstream            # the run in docs/downstream.md
    python benchmarks/downstream_phantoms.py --outdir=bench-downstream --small    # a quick run

Three synthetic sets of known quality stand in for a generator: unseen real phantoms (what a perfect generator would
give), the same phantoms with every label map rolled off its organ (a generator whose labels do not match its
images), and nothing (real only). downstream.py runs as a user runs it; the script prints the Dice of every regime with
its interval, label consistency, and the wall time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import dataset_tool  # noqa: E402
from tests.helpers.volumes import write_phantoms_as_generated  # noqa: E402


def run_downstream(args: list[str]) -> tuple[dict, float]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, os.path.join(ROOT, 'downstream.py'), *args], cwd=ROOT, text=True,
                            capture_output=True)
    if result.returncode != 0:
        raise click.ClickException(result.stderr.strip().splitlines()[-1])
    print(result.stdout)
    outdir = next(a.split('=', 1)[1] for a in args if a.startswith('--outdir='))
    with open(os.path.join(outdir, 'summary.json')) as f:
        return json.load(f), time.perf_counter() - start


def markdown(summary: dict, title: str) -> str:
    lines = [f'| {title} | Dice | 95 % CI | HD95 mm | real + synthetic cases |', '|---|---|---|---|---|']
    for name, e in summary['regimes'].items():
        ci = f'{e["dice_ci95"][0]:.3f} to {e["dice_ci95"][1]:.3f}' if e['dice_ci95'] else ''
        lines.append(f'| {name} | {e["dice"]:.3f} | {ci} | {e["hd95"]:.2f} | {e["train_real"]} + '
                     f'{e["train_synthetic"]} |')
    c = summary['label_consistency']
    if c:
        for side in ('generated', 'real'):
            e = c[side]
            lines.append(f'| label consistency, {side} ({c["segmenter"]} segmenter) | {e["dice"]:.3f} | '
                         f'{e["dice_ci95"][0]:.3f} to {e["dice_ci95"][1]:.3f} | {e["hd95"] or float("nan"):.2f} | '
                         f'{e["cases"]} cases |')
    return '\n'.join(lines)


@click.command()
@click.option('--outdir', required=True, metavar='DIR', help='Where to write the data and the results')
@click.option('--small', is_flag=True, help='A quick run: fewer cases and steps')
def main(outdir: str, small: bool) -> None:
    size = (16, 16, 8) if small else (24, 24, 12)
    real_count, synthetic_count = (24, 20) if small else (60, 60)
    train = ['--iters=80', '--width=4', '--lr=1e-2', '--batch=4', '--seeds=1'] if small else \
        ['--iters=300', '--width=8', '--lr=5e-3', '--batch=4', '--seeds=3']
    fractions = '0.5,1' if small else '0.1,0.25,0.5,1'
    os.makedirs(outdir, exist_ok=False)
    real = os.path.join(outdir, 'real.zip')
    dataset_tool.pack_dataset(f'phantom:{real_count}', real, size=size, seg='phantom')
    unseen = write_phantoms_as_generated(f'phantom:{synthetic_count}:1000', os.path.join(outdir, 'unseen'), size)
    moved = write_phantoms_as_generated(f'phantom:{synthetic_count}:1000', os.path.join(outdir, 'moved'), size,
                                        shift=size[0] // 8)
    print(f'{real_count} real phantoms at {"x".join(map(str, size))}, {synthetic_count} synthetic; {" ".join(train)}')
    swept, t1 = run_downstream([f'--real={real}', f'--synthetic={unseen}', f'--real-fraction={fractions}',
                                f'--outdir={os.path.join(outdir, "unseen-out")}', *train])
    off, t2 = run_downstream([f'--real={real}', f'--synthetic={moved}', '--regimes=real,synthetic',
                              f'--outdir={os.path.join(outdir, "moved-out")}', *train])
    print(markdown(swept, 'synthetic = unseen real phantoms'))
    print()
    print(markdown(off, f'synthetic = label maps moved {size[0] // 8} voxels'))
    print(f'\nWall time: {t1:.0f} s and {t2:.0f} s ({swept["protocol"]["device"]}, '
          f'torch {swept["protocol"]["versions"]["torch"]}, monai {swept["protocol"]["versions"]["monai"]})')


if __name__ == '__main__':
    main()
