# SPDX-License-Identifier: Apache-2.0
"""The end-to-end demo on built-in phantom data: pack with organ masks, train, generate volumes with their label
maps, export an nnU-Net dataset, preview, measure, check.

Each step runs the project's own command line, exactly as a user would type it, so the demo also shows the
workflow. On an idle 2-core CPU it finishes in about 6 minutes, the installation included (docs/performance.md).

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


def run(step: str, args: list[str]) -> None:
    """Run one CLI of this repository, echoing the command; stop the demo if it fails."""
    print(f'\n=== {step}\n$ python {shlex.join(args)}', flush=True)
    start = time.time()
    result = subprocess.run([sys.executable, *args], cwd=HERE)
    if result.returncode != 0:
        raise click.ClickException(f'step "{step}" failed (exit code {result.returncode})')
    print(f'--- {step}: {time.time() - start:.0f} s', flush=True)


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

It takes about 5 minutes with the defaults on an idle 2-core CPU, most of it training (docs/performance.md has the
measured steps; `make demo` adds about a minute to install).

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
@click.option('--outdir', default='demo-out', show_default=True, help='Where everything is written')
@click.option('--volumes', default=96, show_default=True, help='Phantom volumes to pack')
@click.option('--kimg', default=2.0, show_default=True, help='Training length in thousands of volumes')
@click.option('--size', default='32x32x16', show_default=True, help='Volume size XxYxZ')
def main(outdir: str, volumes: int, kimg: float, size: str) -> None:
    outdir = os.path.abspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    data = os.path.join(outdir, 'phantoms.zip')
    runs = os.path.join(outdir, 'runs')
    start = time.time()

    if not os.path.isfile(data):
        run('Pack a phantom dataset with its organ masks', ['dataset_tool.py', f'--source=phantom:{volumes}',
                                                            f'--dest={data}', f'--size={size}', '--seg=phantom'])
    run('Train', ['train.py', f'--outdir={runs}', f'--data={data}', '--cfg=demo', f'--kimg={kimg:g}',
                  '--kimg-per-tick=0.5', '--snap=4', '--workers=1', '--metrics=none', '--mirror=1'])
    run_dir = sorted(glob.glob(os.path.join(runs, '[0-9]' * 5 + '-*')))[-1]
    snapshot = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1]
    export = os.path.join(outdir, 'G.pt')
    run('Export the generator safely', ['legacy.py', 'export', f'--network={snapshot}', f'--dest={export}'])
    volumes_dir = os.path.join(outdir, 'generated')  # --overwrite below: a second demo replaces its outputs.
    run('Generate volumes', ['generate.py', f'--network={export}', '--count=16', '--trunc=1', f'--outdir={volumes_dir}',
                             '--preview', '--overwrite'])
    run('Style mixing', ['style_mixing.py', f'--network={export}', '--rows=0-2', '--cols=10-12', '--styles=0-3',
                         f'--outdir={os.path.join(outdir, "mixing")}', '--overwrite'])
    run('Measure', ['calc_metrics.py', f'--network={snapshot}', '--metrics=mmd_full,msssim_gen100',
                    f'--data={data}'])

    nnunet = os.path.join(outdir, 'nnunet', 'Dataset501_PhantomSynth')
    run('Export labelled volumes as an nnU-Net dataset', ['generate.py', f'--network={export}', '--count=16',
                                                          '--layout=nnunet', f'--outdir={nnunet}', '--overwrite'])

    check(volumes_dir, data)
    print(f'Demo finished in {time.time() - start:.0f} s. Outputs in {outdir}: reals/fakes grids in {run_dir}, '
          f'volumes, label maps and previews in {volumes_dir}, an nnU-Net raw dataset in {nnunet}.')


if __name__ == '__main__':
    main()
