# SPDX-License-Identifier: Apache-2.0
"""Radiomics extraction speed: all 107 features of phantom volumes at 256x256x24 read from NIfTI files.

    python benchmarks/radiomics_speed.py              # 32 phantoms at 256x256x24, 1 and 2 workers
    python benchmarks/radiomics_speed.py --small      # 8 phantoms at 64x64x16, a quick run

Each volume is a uint8 .nii.gz (stored units, as generate.py writes them) with a NAME_seg.nii.gz mask of its
central organ (30,000 to 70,000 voxels at 256x256x24, about a prostate). A row times reading both files and
extracting every feature with PyRadiomics' default settings, then the split ROI of the paper (a 40x40x24 mm box for
first order and texture, the mask for shape), and one row per feature class on the mask, one worker.
"""

from __future__ import annotations

import os
import tempfile
import time

import click
import numpy as np
import SimpleITK as sitk

from common import print_table  # noqa: I001 (puts the repo on sys.path)
from metrics.radiomics import features, roi, settings as settings_lib, sources
from volumes import phantom, volume_io
from volumes.contract import LPS_DIRECTION

PROSTATE_CASES = 750  # The prostate paper's real set.


def write_cases(folder: str, count: int, size: tuple[int, int, int]) -> list[sources.FileCase]:
    """Phantoms as uint8 NIfTI with a mask of the central organ (the bright ellipsoid)."""
    for seed in range(count):
        volume, spacing = phantom.make_phantom(seed, size)
        stored = np.clip(volume / 1.2 * 255, 0, 255).astype(np.uint8)  # [D, H, W]
        d, h, w = stored.shape
        mask = np.zeros_like(stored)
        centre = (slice(None), slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
        mask[centre] = volume[centre] > 0.65
        for name, array in ((f'case{seed:04d}', stored), (f'case{seed:04d}_seg', mask)):
            volume_io.write_volume(os.path.join(folder, f'{name}.nii.gz'), array, spacing,
                                   LPS_DIRECTION)
    return sources.folder_cases(folder)


def time_extract(cases: list, options: features.ExtractOptions, workers: int) -> dict:
    start = time.perf_counter()
    results = features.extract_many(cases, options, workers=workers)
    seconds = time.perf_counter() - start
    assert len(results) == len(cases)
    rate = len(cases) / seconds
    return dict(volumes_per_sec=rate, ms_per_volume=1000 / rate, minutes_for_750=PROSTATE_CASES / rate / 60)


def time_class(cases: list, cls: str) -> float:
    """Milliseconds per volume of one class alone (files already read, mask ROI prepared)."""
    loaded = [case() for case in cases]
    settings = settings_lib.Settings()
    total = 0.0
    for image, mask, name, mask_name in loaded:
        region = roi.prepare(image, roi.label_mask(mask, 1, mask_name), settings, name)
        start = time.perf_counter()
        levels = roi.discretize(region, settings)
        features.compute_class(cls, region, levels, settings)
        total += time.perf_counter() - start
    return 1000 * total / len(loaded)


@click.command()
@click.option('--count', type=int, default=32, show_default=True, help='Volumes')
@click.option('--small', is_flag=True, help='8 volumes at 64x64x16')
def main(count: int, small: bool) -> None:
    size = (64, 64, 16) if small else (256, 256, 24)
    count = 8 if small else count
    with tempfile.TemporaryDirectory(prefix='radiomics-bench-') as folder:
        cases = write_cases(folder, count, size)
        voxels = [int(np.count_nonzero(sitk.GetArrayViewFromImage(volume_io.read_image(c.mask_path)))) for c in cases]
        print(f'{count} volumes at {"x".join(map(str, size))}, ROI {min(voxels)}-{max(voxels)} voxels '
              f'(median {int(np.median(voxels))}); {os.cpu_count()} CPU cores\n')
        rows = []
        split = features.ExtractOptions(roi='split', box_mm=(40.0, 40.0, 24.0))
        for label, options in (('all 107 features, mask', features.ExtractOptions()), ('all 107, split roi', split)):
            for workers in (1, 2):
                rows.append(dict(run=label, workers=workers, **time_extract(cases, options, workers)))
        print_table(rows, ['run', 'workers', 'volumes_per_sec', 'ms_per_volume', 'minutes_for_750'])
        print()
        print_table([dict(feature_class=c, ms_per_volume=time_class(cases, c)) for c in features.CLASS_FEATURES],
                    ['feature_class', 'ms_per_volume'])


if __name__ == '__main__':
    main()
