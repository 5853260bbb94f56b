# SPDX-License-Identifier: Apache-2.0
"""The end-to-end demo on built-in phantom data: pack, train, generate, preview, measure, check.

Each step runs the project's own command line, exactly as a user would type it, so the demo also shows the
workflow. On an idle 2-core CPU it finishes in about 7 minutes, the installation included (docs/performance.md).

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


def check_organ_contrast(volume_dir: str, data_zip: str) -> tuple[float, float]:
    """Mean organ contrast of the generated volumes and of the real phantoms."""
    import nibabel as nib
    from training.dataset import VolumeFolderDataset
    from volumes.phantom import organ_contrast
    fakes = [np.asarray(nib.load(path).dataobj, dtype=np.float32) for path in
             sorted(glob.glob(os.path.join(volume_dir, '*.nii.gz')))]
    # NIfTI stores x, y, z; the contrast measure takes [D, H, W].
    fake_contrast = float(np.mean([organ_contrast(f.transpose(2, 1, 0)) for f in fakes]))
    dataset = VolumeFolderDataset(data_zip)
    real_contrast = float(np.mean([organ_contrast(dataset[i][0][0].astype(np.float32)) for i in range(len(dataset))]))
    return fake_contrast, real_contrast


@click.command(cls=dnnlib.cli.Command)
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
        run('Pack a phantom dataset', ['dataset_tool.py', f'--source=phantom:{volumes}', f'--dest={data}',
                                       f'--size={size}'])
    run('Train', ['train.py', f'--outdir={runs}', f'--data={data}', '--cfg=demo', f'--kimg={kimg:g}',
                  '--kimg-per-tick=0.5', '--snap=4', '--workers=1', '--metrics=none', '--mirror=1'])
    run_dir = sorted(glob.glob(os.path.join(runs, '[0-9]' * 5 + '-*')))[-1]
    snapshot = sorted(glob.glob(os.path.join(run_dir, 'network-snapshot-*.pkl')))[-1]
    export = os.path.join(outdir, 'G.pt')
    run('Export the generator safely', ['legacy.py', 'export', f'--network={snapshot}', f'--dest={export}'])
    volumes_dir = os.path.join(outdir, 'generated')
    run('Generate volumes', ['generate.py', f'--network={export}', '--count=16', '--trunc=1', f'--outdir={volumes_dir}',
                             '--preview'])
    run('Style mixing', ['style_mixing.py', f'--network={export}', '--rows=0-2', '--cols=10-12', '--styles=0-3',
                         f'--outdir={os.path.join(outdir, "mixing")}'])
    run('Measure', ['calc_metrics.py', f'--network={snapshot}', '--metrics=mmd_full,msssim_gen100',
                    f'--data={data}'])

    fake_contrast, real_contrast = check_organ_contrast(volumes_dir, data)
    print(f'\n=== Check\nOrgan contrast (organ mean minus border mean, in units of the range): generated '
          f'{fake_contrast:.3f}, real {real_contrast:.3f}')
    if fake_contrast <= 0.25 * real_contrast:
        raise click.ClickException('the generated volumes do not show the phantom organ brighter than background')
    print(f'PASS: the generated volumes show the organ brighter than the background.\n'
          f'Demo finished in {time.time() - start:.0f} s. Outputs in {outdir}: reals/fakes grids in {run_dir}, '
          f'volumes and previews in {volumes_dir}.')


if __name__ == '__main__':
    main()
