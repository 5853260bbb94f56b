# SPDX-License-Identifier: Apache-2.0
"""The volume contract: volumes/contract.py's axis order, intensity mappings and volume record, and previews
(training/visualize.py) upright, in the radiological display, with true proportions. End to end through the tools:
tests/test_oblique_scan_end_to_end.py."""

import numpy as np
import pytest
import torch

from training import visualize
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

#----------------------------------------------------------------------------
# Previews: upright, in the radiological display, with true proportions.


def marked_volume(D=8, H=6, W=10):
    """[1, D, H, W] zeros with 1 at a voxel near the head (last slice), posterior (last row) and the patient's left
    (last column): the corner that shows where each view puts superior, posterior and left."""
    volume = np.zeros([1, D, H, W], dtype=np.float32)
    volume[0, D - 1, :, :] = 0.5        # The head end, in every row and column.
    volume[0, :, H - 1, W - 1] = 1.0    # A posterior-left column through all slices.
    return volume


def test_previews_are_upright_and_left_is_on_the_right():
    D, H, W = 8, 6, 10
    grid = visualize.middle_slices(marked_volume(D, H, W), planes=visualize.PLANES)[0]  # [rows, W + W + H]
    axial, coronal, sagittal = grid[:H, :W], grid[:D, W:2 * W], grid[:D, 2 * W:]
    assert axial[H - 1, W - 1] == 1 and axial[0, 0] == 0  # Posterior at the bottom, the patient's left on the right.
    assert np.all(coronal[0] >= 0.5) and np.all(coronal[D - 1, :W - 1] == 0)  # The head at the top.
    assert np.all(sagittal[0] >= 0.5) and sagittal[D - 1, 0] == 0  # The head at the top, anterior on the left.


def test_previews_show_anisotropic_voxels_in_proportion(tmp_path):
    volume = np.random.default_rng(0).random((1, 10, 20, 20)).astype(np.float32)
    grid = visualize.middle_slices(volume, planes=visualize.PLANES, spacing=(6.0, 6.0, 12.0))
    assert grid.shape == (1, 20, 20 + 20 + 20)  # 10 slices of 12 mm are as tall as 20 rows of 6 mm.
    image = visualize.volume_grid(volume[None], (1, 1), (0, 1), visualize.PLANES, spacing=(6.0, 6.0, 12.0))
    assert image.size == (60, 20)


def test_tri_grids_of_training_are_upright(tmp_path):
    info_volume = marked_volume()
    image = np.asarray(visualize.volume_grid(info_volume[None], (1, 1), (0, 1), visualize.PLANES))
    assert image[0, 10:20].min() >= 127  # The coronal view's top row is the head end.


def test_previews_are_enlarged_by_a_whole_factor_keeping_proportions():
    volume = np.random.RandomState(0).rand(1, 16, 32, 32).astype(np.float32)  # 32x32x16, 1 x 1 x 2 mm
    grid = visualize.middle_slices(volume, planes=visualize.PLANES, spacing=(1.0, 1.0, 2.0), min_size=256)
    assert grid.shape == (1, 256, 3 * 256)  # Each plane 32 x 32 mm -> 32 x 32 px, enlarged 8 times.
    axial = visualize.middle_slices(volume, spacing=(1.0, 1.0, 2.0), min_size=256)[0]
    assert np.array_equal(axial[::8, ::8], volume[0, 8]) and np.array_equal(axial[7::8, 7::8], volume[0, 8])
    anisotropic = visualize.middle_slices(volume[:, :, :, :20], planes=('axial',), min_size=100)
    assert anisotropic.shape == (1, 32 * 4, 20 * 4)  # The long side 32 -> 128 >= 100; the aspect is kept.
