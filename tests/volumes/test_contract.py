# SPDX-License-Identifier: Apache-2.0
"""volumes/contract.py: axis order, intensity mappings and the volume record."""

import numpy as np
import pytest
import torch

from volumes import contract as volume
from volumes.contract import IntensityMapping, VolumeInfo


def test_axis_order_conversions_are_one_pair_of_inverses():
    assert volume.parse_size('256x256x24') == (24, 256, 256) and volume.format_size((24, 256, 256)) == '256x256x24'
    assert volume.format_size([3, 24, 128, 256]) == '256x128x24'  # [C, D, H, W]: the last three.
    assert volume.xyz_to_dhw((1, 2, 3)) == (3, 2, 1) and volume.dhw_to_xyz((3, 2, 1)) == (1, 2, 3)
    assert volume.divide_shape((24, 256, 256), (2, 2, 1)) == (24, 128, 128)
    assert volume.as_xyz(2, 'up') == (2, 2, 2) and volume.as_xyz((1, 2, 2), 'up') == (1, 2, 2)
    assert volume.parse_xyz('0.5,0.5,3', '--spacing') == (0.5, 0.5, 3.0) and volume.parse_xyz('2', 'x') == (2, 2, 2)
    for bad in ('256x256', '0x4x4', 'axbxc'):
        with pytest.raises(ValueError, match='expected XxYxZ'):
            volume.parse_size(bad)
    with pytest.raises(ValueError, match='--spacing "1,nan,2": expected three numbers'):
        volume.parse_xyz('1,nan,2', '--spacing')


def test_unit_and_stored_round_trip_in_numpy_and_torch():
    stored = np.arange(256, dtype=np.uint8)
    unit = volume.to_unit(stored, 255)
    assert unit.dtype == np.float32 and unit[0] == -1 and unit[-1] == 1
    assert np.array_equal(volume.from_unit(unit, 'uint8'), stored)
    assert torch.allclose(volume.to_unit(torch.from_numpy(stored), 255), torch.from_numpy(unit))
    assert volume.from_unit(np.array([-3.0, 3.0]), 'uint16').tolist() == [0, 65535]  # Clipped.


def test_window_mapping_goes_back_to_source_units():
    ct = IntensityMapping('window', -1000, 1000, 'uint16')
    hu = np.array([-2000, -1000, 0, 437.5, 1000, 3000], dtype=np.float32)
    back = ct.to_source(ct.to_stored(hu, 'ct'))
    assert np.allclose(back, np.clip(hu, -1000, 1000), atol=2000 / 65535)  # One stored step.
    assert ct.invertible and not IntensityMapping().invertible
    with pytest.raises(ValueError, match='cannot be turned back'):
        IntensityMapping().to_source(np.zeros(3))
    with pytest.raises(ValueError, match='expected finite lo < hi'):
        IntensityMapping('window', 1000, -1000)
    with pytest.raises(ValueError, match='constant intensity'):
        IntensityMapping().to_stored(np.ones(10), 'flat.nii.gz')


def test_percentile_mapping_is_the_packers():
    array = np.linspace(0, 100, 1001, dtype=np.float32)
    stored = IntensityMapping('percentile', 10, 90, 'uint8').to_stored(array, 'x')
    assert stored[100] == 0 and stored[900] == 255 and stored[500] == 128  # 10 -> 0, 90 -> 255, 50 -> half way.


def test_record_round_trip_and_placement():
    info = VolumeInfo(spacing=(0.5, 0.5, 3), direction=(0, 1, 0, -1, 0, 0, 0, 0, 1), centre=(10, 20, 30),
                      intensity=IntensityMapping('window', -100, 300, 'uint16'), channels=('t2w', 'adc'),
                      label_names={1: 'CZ+TZ', 2: 'PZ'}, orient='lps', interpolation='bspline')
    assert VolumeInfo.from_dict(info.to_dict()) == info
    assert info.orientation == 'ALS' and info.dtype == 'uint16' and info.max_value == 65535  # As SimpleITK names it.
    origin = np.asarray(info.origin((24, 256, 256)))  # [D, H, W]
    half = (np.array([256, 256, 24]) - 1) / 2 * [0.5, 0.5, 3]
    assert np.allclose(origin + np.reshape(info.direction, (3, 3)) @ half, (10, 20, 30))
    assert 'window -100..300' in info.describe() and 'centred at (10, 20, 30)' in info.describe()


def test_older_dataset_json_gives_the_record_it_implies():
    info = VolumeInfo.from_dataset_json(dict(spacing=[1, 1, 2], direction=[1, 0, 0, 0, 1, 0, 0, 0, 1],
                                             dtype='uint16', clip_percentiles=[1, 99], channels=['t2w']))
    assert info.centre == (0, 0, 0) and info.intensity == IntensityMapping('percentile', 1, 99, 'uint16')
    assert info.channels == ('t2w',)


@pytest.mark.parametrize('record, message', [
    (dict(spacing=[1, 1]), 'spacing: expected three positive sizes'),
    (dict(spacing=[1, 1, 1], direction=[1, 0, 0, 0, 2, 0, 0, 0, 1]), 'orthonormal'),
    (dict(spacing=[1, 1, 1], intensity=dict(dtype='float32')), 'stored dtype "float32"'),
    (dict(spacing=[1, 1, 1], orient='ras'), 'orient "ras"'),
    (dict(direction=[1, 0, 0, 0, 1, 0, 0, 0, 1]), 'malformed volume record'),
])
def test_malformed_records_name_the_field(record, message):
    with pytest.raises(ValueError, match=message):
        VolumeInfo.from_dict(record)
