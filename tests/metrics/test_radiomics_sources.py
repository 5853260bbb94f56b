# SPDX-License-Identifier: Apache-2.0
"""What radiomics.py checks in its inputs before extracting: masks that give no ROI, and units that differ."""

import os

import numpy as np
import pytest

from metrics.radiomics import settings, sources
from volumes import volume_io
from volumes.contract import LPS_DIRECTION


def intensities(dtype: str, low: float, high: float) -> sources.Intensities:
    return sources.Intensities((dtype,), low, high)


@pytest.mark.parametrize('reals, fakes, differ', [
    (intensities('uint8', 0, 255), intensities('uint8', 20, 200), False),       # A generator a little off.
    (intensities('int16', -1000, 1500), intensities('float32', -990, 1400), False),  # Both Hounsfield units.
    (intensities('uint16', 0, 4080), intensities('uint8', 0, 255), True),        # 12-bit source vs stored.
    (intensities('uint16', 0, 400), intensities('uint8', 0, 255), True),         # Values above uint8's range.
    (intensities('float32', 0, 1.2), intensities('uint8', 0, 255), True),
    (intensities('uint8', 0, 100), intensities('uint8', 150, 255), True),        # Barely overlapping ranges.
])
def test_units_differ(reals, fakes, differ):
    assert sources.units_differ(reals, fakes) == differ
    assert sources.units_differ(fakes, reals) == differ


def test_intensities_reads_a_spread_sample(tmp_path):
    for i in range(5):
        volume = np.full((4, 6, 6), 10 * i, dtype=np.uint16)  # [D, H, W]
        volume[0, 0, 0] = 100 + 10 * i
        volume_io.write_volume(os.path.join(tmp_path, f'v{i}.nii.gz'), volume, (1, 1, 1),
                               LPS_DIRECTION)
    cases = sources.folder_cases(str(tmp_path))
    assert sources.intensities(cases) == intensities('uint16', 20, 120)           # Medians over all 5.
    assert sources.intensities(cases, most=2) == intensities('uint16', 20, 120)   # v0 and v4: medians 20, 120.


def test_mask_problem_names_the_mask_and_the_reason(tmp_path):
    image = np.arange(4 * 6 * 6, dtype=np.uint8).reshape(4, 6, 6)
    masks = {'empty': np.zeros_like(image), 'other': np.full_like(image, 2), 'single': np.zeros_like(image),
             'good': np.zeros_like(image)}
    masks['single'][1, 2, 2] = 1
    masks['good'][1:3, 2:4, 2:4] = 1
    for name, mask in masks.items():
        volume_io.write_volume(os.path.join(tmp_path, f'{name}.nii.gz'), image, (1, 1, 1),
                               LPS_DIRECTION)
        volume_io.write_volume(os.path.join(tmp_path, f'{name}_seg.nii.gz'), mask, (1, 1, 1),
                               LPS_DIRECTION)
    cases = {case.name: case for case in sources.folder_cases(str(tmp_path))}
    seg = lambda name: os.path.join(tmp_path, f'{name}_seg.nii.gz')  # noqa: E731
    defaults = settings.Settings()
    assert sources.mask_problem(cases['empty'], 1, defaults) == (seg('empty'), 'no voxel with label 1', 'it is empty')
    assert sources.mask_problem(cases['other'], 1) == (seg('other'), 'no voxel with label 1', 'it holds labels [2]')
    assert sources.mask_problem(cases['single'], 1, defaults) == (seg('single'), 'the ROI is a single voxel',
                                                                  '1 voxels with label 1')
    assert sources.mask_problem(cases['single'], 1) is None  # Only a box's centre: one voxel is enough.
    assert sources.mask_problem(cases['good'], 1, defaults) is None
