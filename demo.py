# SPDX-License-Identifier: Apache-2.0
"""The end-to-end demo on built-in phantom data: pack with organ masks, train, generate volumes with their label
maps, export an nnU-Net dataset, preview, measure, check.

Each step runs the project's own command line, exactly as a user would type it, so the demo also shows the
workflow. On an idle 2-core CPU it finishes in about 3 minutes, 4 with the installation; allow 8 on a slow or busy
2-core machine (docs/performance.md).

    python demo.py --outdir demo-out
"""

from __future__ import annotations

import glob
import os
import shlex
import subprocess
import sys
import time

import click
import numpy as np

import dnnlib

HERE = os.path.dirname(os.path.abspath(__file__))

# One thread per step unless the caller sets OMP_NUM_THREADS. On two cores, two threads trained the demo 1.26x faster
# on an idle machine, but 2.4-5x slower whenever anything else ran (a test suite, another user, a neighbouring VM):
# the threads wait for each other, spinning (docs/performance.md, "The demo").
STEP_ENV = {'OMP_NUM_THREADS': '1'}


def children_cpu_seconds() -> float:
    """User + system CPU seconds of the finished child processes (and theirs); 0 where the system does not count
    them (Windows)."""
    times = os.times()
    return times.children_user + times.children_system


def run(timings: dict[str, tuple[float, float]], step: str, args: list[str]) -> None:
    """Run one CLI of this repository, echoing the command; stop the demo if it fails. Adds the step's wall and
    CPU seconds to `timings`: on a machine that others share, the CPU seconds are the step's own work."""
    print(f'\n=== {step}\n$ python {shlex.join(args)}', flush=True)
    start, cpu_start = time.time(), children_cpu_seconds()
    result = subprocess.run([sys.executable, *args], cwd=HERE, env={**STEP_ENV, **os.environ})
    if result.returncode != 0:
        raise click.ClickException(f'step "{step}" failed (exit code {result.returncode})')
    timings[step] = (time.time() - start, children_cpu_seconds() - cpu_start)
    print(f'--- {step}: {timings[step][0]:.0f} s (CPU {timings[step][1]:.0f} s)', flush=True)


def print_timings(timings: dict[str, tuple[float, float]]) -> None:
    """Wall and CPU seconds of every step, and their sums."""
    width = max(len(step) for step in timings)
    print(f'\n=== Time per step\n{"step":{width}}  wall s  CPU s')
    for step, (wall, cpu) in [*timings.items(), ('all steps', tuple(map(sum, zip(*timings.values()))))]:
        print(f'{step:{width}}  {wall:6.0f}  {cpu:5.0f}')


def generated_volumes(volume_dir: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """(volume, label map) [D, H, W] of every generated NAME.nii.gz and NAME_seg.nii.gz."""
    import nibabel as nib
    paths = sorted(p for p in glob.glob(os.path.join(volume_dir, '*.nii.gz')) if not p.endswith('_seg.nii.gz'))
    read = lambda path: np.asarray(nib.load(path).dataobj).transpose(2, 1, 0)  # noqa: E731 (NIfTI x, y, z)
    return [(read(path).astype(np.float32), read(path[:-len('.nii.gz')] + '_seg.nii.gz')) for path in paths]


def check(volume_dir: str, data_zip: str) -> None:
    """The generated volumes show the phantom's bright organ, and their label maps cover it, as the real ones do
    (volumes.phantom.organ_contrast and organ_dice, against the same measures of the real phantoms)."""
    from volumes.packed import PackedDataset
    from volumes.phantom import organ_contrast, organ_dice
    fakes = generated_volumes(volume_dir)
    dataset = PackedDataset(data_zip)
    reals = [(dataset.volume(i)[0].astype(np.float32), dataset.label_map(i)) for i in range(len(dataset))]
    measures = {name: [float(np.mean([fn(*pair) for pair in pairs])) for pairs in (fakes, reals)]
                for name, fn in [('organ contrast', lambda v, _: organ_contrast(v)), ('label map Dice', organ_dice)]}
    print('\n=== Check')
    for name, (fake, real) in measures.items():
        print(f'{name}: generated {fake:.3f}, real {real:.3f}')
    if measures['organ contrast'][0] <= 0.25 * measures['organ contrast'][1]:
        raise click.ClickException('the generated volumes do not show the phantom organ brighter than background')
    if measures['label map Dice'][0] <= 0.25 * measures['label map Dice'][1]:
        raise click.ClickException('the generated label maps do not cover the organ of their volumes')
    print('PASS: the generated volumes show the organ brighter than the background, and their label maps cover it.')


HELP = """Run the whole project on built-in phantom data, each step through its own command line as a user types it:
pack --volumes phantoms with their organ masks, train a small model on the volumes and label maps (the demo preset,
--kimg thousand volumes), export the generator, generate 16 volumes with their label maps and previews, mix styles,
measure two metrics, export an nnU-Net dataset, and check that the generated volumes show the organ and that their
label maps cover it (exit code 1 if not).

It takes about 3 minutes with the defaults on an idle 2-core CPU, up to 8 on a slow or busy one, most of it training
(docs/performance.md has the measured steps; `make demo` adds about a minute to install).

Everything is written under --outdir (a phantoms.zip already there is reused):

\b
  phantoms.zip                      the packed phantoms and their organ masks
  runs/NNNNN-phantoms-.../          the training run: log.txt, reals/fakes grids, snapshots
  G.pt                              the exported generator (loads with torch.load(weights_only=True))
  generated/                        16 NIfTI volumes, their label maps (*_seg.nii.gz) and previews
  mixing/                           style-mixing volumes and grid
  nnunet/Dataset501_PhantomSynth/   the nnU-Net raw dataset
"""


@click.command(cls=dnnlib.cli.Command, help=HELP)
@dnnlib.cli.outdir_option('Where everything is written (a second demo there adds a training run and replaces the '
                          'other outputs)', default='demo-out')
@click.option('--volumes', default=96, show_default=True, help='Phantom volumes to pack')
@click.option('--kimg', default=0.5, show_default=True, help='Training length in thousands of volumes')
@click.option('--size', default='32x32x16', show_default=True, help='Volume size XxYxZ')
def main(outdir: str, volumes: int, kimg: float, size: str) -> None:
    outdir = os.path.abspath(outdir)  # The steps run in the repository's folder.
    os.makedirs(outdir, exist_ok=True)
    data = os.path.join(outdir, 'phantoms.zip')
    runs = os.path.join(outdir, 'runs')
    start = time.time()
    timings: dict[str, tuple[float, float]] = {}

    if not os.path.isfile(data):
        run(timings, 'Pack a phantom dataset with its organ masks', [
            'dataset_tool.py', f'--source=phantom:{volumes}', f'--dest={data}', f'--size={size}', '--seg=phantom'])
    # Batch 2: 250 steps in 0.5 kimg, the steps that the label maps need to cover the organ (docs/performance.md).
    run(timings, 'Train', ['train.py', f'--outdir={runs}', f'--data={data}', '--cfg=demo', f'--kimg={kimg:g}',
                           '--batch=2', '--kimg-per-tick=0.125', '--snap=4', '--workers=1', '--metrics=none',
                           '--mirror'])
    run_dir = sorted(glob.glob(os.path.join(runs, '[0-9]' * 5 + '-*')))[-1]
    snapshot = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1]
    export = os.path.join(outdir, 'G.pt')
    run(timings, 'Export the generator safely', ['legacy.py', 'export', f'--network={snapshot}', f'--dest={export}'])
    volumes_dir = os.path.join(outdir, 'generated')  # --overwrite below: a second demo replaces its outputs.
    run(timings, 'Generate volumes', ['generate.py', f'--network={export}', '--count=16', '--trunc=1',
                                      f'--outdir={volumes_dir}', '--preview', '--overwrite'])
    run(timings, 'Style mixing', ['style_mixing.py', f'--network={export}', '--rows=0-2', '--cols=10-12',
                                  '--styles=0-3', f'--outdir={os.path.join(outdir, "mixing")}', '--overwrite'])
    run(timings, 'Measure', ['calc_metrics.py', f'--network={snapshot}', '--metrics=mmd_full,msssim_gen100',
                             f'--data={data}'])

    nnunet = os.path.join(outdir, 'nnunet', 'Dataset501_PhantomSynth')
    run(timings, 'Export labelled volumes as an nnU-Net dataset', ['generate.py', f'--network={export}',
                                                                   '--count=16', '--layout=nnunet',
                                                                   f'--outdir={nnunet}', '--overwrite'])

    check_start, check_cpu = time.time(), time.process_time()
    try:
        check(volumes_dir, data)
    finally:  # The times also when the check fails.
        timings['Check'] = (time.time() - check_start, time.process_time() - check_cpu)
        print_timings(timings)
    print(f'Demo finished in {time.time() - start:.0f} s. Outputs in {outdir}: reals/fakes grids in {run_dir}, '
          f'volumes, label maps and previews in {volumes_dir}, an nnU-Net raw dataset in {nnunet}.')


if __name__ == '__main__':
    main()
