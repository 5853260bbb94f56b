# SPDX-License-Identifier: Apache-2.0
"""Data pipeline speed: packing volumes with dataset_tool and reading them back with VolumeFolderDataset.

    python benchmarks/dataset_tool.py              # 200 phantoms at 256x256x24
    python benchmarks/dataset_tool.py --small      # 20 phantoms at 64x64x16, a quick run

Rows: packing phantoms drawn at the target size (no resampling); packing the same phantoms from NIfTI files at
half the in-plane size (so every volume is read, reoriented and resampled); reading the packed zip directly and
through a DataLoader with workers.
"""

from __future__ import annotations

import os
import tempfile
import time

import click
import numpy as np
import torch

from common import print_table  # noqa: I001 (puts the repo on sys.path)
import dataset_tool
from volumes import phantom, volume_io
from training.dataset import VolumeFolderDataset
from volumes.contract import LPS_DIRECTION, dhw_to_xyz, parse_size


def time_pack(source: str, dest: str, size: tuple[int, int, int], count: int) -> dict:
    start = time.perf_counter()
    summary = dataset_tool.pack_dataset(source, dest, size=size)
    seconds = time.perf_counter() - start
    assert summary.written == count, summary.report()
    return dict(seconds=seconds, volumes_per_sec=count / seconds)


def write_nifti_sources(folder: str, count: int, size: tuple[int, int, int]) -> None:
    """Phantoms at half the in-plane size as NIfTI files, so packing them at size must resample."""
    half = (size[0] // 2, size[1] // 2, size[2])
    for seed in range(count):
        array, spacing = phantom.make_phantom(seed, half)
        volume_io.write_volume(os.path.join(folder, f'case{seed:04d}.nii.gz'), array, spacing,
                               LPS_DIRECTION)


def time_read(path: str, workers: int, batch: int) -> dict:
    dataset = VolumeFolderDataset(path)
    nbytes = int(np.prod(dataset.image_shape)) * dataset.dtype.itemsize
    start = time.perf_counter()
    if workers == 0:
        for i in range(len(dataset)):
            dataset[i]
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers)
        for _ in loader:
            pass
    seconds = time.perf_counter() - start
    return dict(seconds=seconds, volumes_per_sec=len(dataset) / seconds,
                mb_per_sec=len(dataset) * nbytes / seconds / 2**20)


@click.command()
@click.option('--count', default=200, show_default=True, help='Volumes to pack')
@click.option('--size', default='256x256x24', show_default=True, help='Volume size XxYxZ')
@click.option('--workers', default=2, show_default=True, help='DataLoader workers for the read test')
@click.option('--small', is_flag=True, help='20 volumes at 64x64x16')
def main(count: int, size: str, workers: int, small: bool) -> None:
    if small:
        count, size = 20, '64x64x16'
    size_xyz = dhw_to_xyz(parse_size(size))
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench-dataset-') as tmp:
        dest = os.path.join(tmp, 'phantoms.zip')
        rows.append(dict(step='pack phantoms (no resampling)', **time_pack(f'phantom:{count}', dest, size_xyz, count)))
        os.makedirs(os.path.join(tmp, 'nifti'))
        write_nifti_sources(os.path.join(tmp, 'nifti'), count, size_xyz)
        rows.append(dict(step='pack NIfTI (read + resample)',
                         **time_pack(os.path.join(tmp, 'nifti'), os.path.join(tmp, 'nifti.zip'), size_xyz, count)))
        rows.append(dict(step='read zip, direct', **time_read(dest, 0, 1)))
        rows.append(dict(step=f'read zip, DataLoader {workers} workers, batch 8', **time_read(dest, workers, 8)))
        zip_mb = os.path.getsize(dest) / 2**20
    print(f'\nData pipeline, {count} volumes at {size}, {os.cpu_count()} CPU cores, zip {zip_mb:.1f} MiB\n')
    print_table(rows, ['step', 'seconds', 'volumes_per_sec', 'mb_per_sec'])


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
