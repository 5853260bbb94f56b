# SPDX-License-Identifier: Apache-2.0
"""The volume contract end to end: an oblique scan is packed with its direction and centre, a network trained on it
writes volumes that overlay the scan (also after the dataset is gone), and previews are upright."""

import os

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import dataset_tool
import generate
import train
from tests.test_dataset_tool import blob_centroid, read_zip, sitk_blob_image
from training import visualize
from training.dataset import VolumeFolderDataset

TINY_CFG = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'tiny.toml')
CENTRE = np.array([30.0, -20.0, 15.0])  # The scan's centre in LPS world space, mm.
BLOB = CENTRE + [14.0, 10.0, -6.0]      # The marker, off centre, so that a lost tilt moves it by several voxels.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def rotation(z_degrees: float, x_degrees: float) -> np.ndarray:
    a, b = np.radians(z_degrees), np.radians(x_degrees)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


OBLIQUE = rotation(25, 10)  # Columns: the scan's x, y, z axes in LPS; closest to L, P, S, so reorienting keeps it.


@pytest.fixture(scope='module')
def oblique_scan(tmp_path_factory):
    import SimpleITK as sitk
    folder = tmp_path_factory.mktemp('oblique')
    image = sitk_blob_image((48, 48, 20), (1.5, 1.5, 3.0), OBLIQUE.flatten(), CENTRE, BLOB)
    sitk.WriteImage(image, str(folder / 'scan.nii.gz'))
    return folder


def pack(src, dest, *args):
    result = CliRunner().invoke(dataset_tool.main, ['--source', str(src), '--dest', str(dest), '--size', '32x32x16',
                                                    '--spacing', '2,2,4', '--clip', '0,100', *args])
    assert result.exit_code == 0, result.output
    return read_zip(dest)


def world_of_voxel(voxel_xyz, spacing, direction, centre, size_xyz) -> np.ndarray:
    half = (np.asarray(size_xyz) - 1) / 2
    return np.asarray(centre) + np.reshape(direction, (3, 3)) @ ((np.asarray(voxel_xyz) - half) * spacing)


@pytest.mark.parametrize('orient', ['source', 'lps'])
def test_an_oblique_scan_keeps_its_place_in_the_world(oblique_scan, tmp_path, orient):
    info, arrays = pack(oblique_scan, tmp_path / 'd.zip', '--orient', orient)
    record = info['volume_info']
    expected = OBLIQUE if orient == 'source' else np.eye(3)
    assert np.allclose(np.reshape(record['direction'], (3, 3)), expected, atol=1e-6)
    assert np.allclose(record['centre'], CENTRE, atol=1e-6) and record['orient'] == orient
    assert info['grids'][0][0] == '00000/vol00000000.npy' and np.allclose(info['grids'][0][1], CENTRE)
    # The marker's packed voxel, placed with the record, is where the marker is in the world (within a voxel).
    found = world_of_voxel(blob_centroid(arrays['00000/vol00000000.npy'][0]), record['spacing'], record['direction'],
                           record['centre'], (32, 32, 16))
    assert np.all(np.abs(found - BLOB) < record['spacing']), (found, BLOB)
    if orient == 'source':  # What dataset.json used to record (the identity) would put it several voxels off.
        wrong = world_of_voxel(blob_centroid(arrays['00000/vol00000000.npy'][0]), record['spacing'], np.eye(3),
                               record['centre'], (32, 32, 16))
        assert np.linalg.norm(wrong - BLOB) > 2 * max(record['spacing'])


@pytest.mark.slow
def test_generated_volumes_overlay_the_scan_without_the_dataset(oblique_scan, tmp_path):
    pack(oblique_scan, tmp_path / 'd.zip')
    result = CliRunner().invoke(train.main, [f'--outdir={tmp_path / "runs"}', f'--data={tmp_path / "d.zip"}',
                                             f'--cfg={TINY_CFG}', '--batch=4', '--workers=0', '--metrics=none',
                                             '--kimg=0.004'])
    assert result.exit_code == 0, result.output
    snapshot = next((tmp_path / 'runs').glob('*/network-snapshot-*.pkl'))
    os.remove(tmp_path / 'd.zip')  # As on another machine: generation needs only the network.
    result = CliRunner().invoke(generate.main, ['--network', str(snapshot), '--seeds', '0', '--outdir',
                                                str(tmp_path / 'out')])
    assert result.exit_code == 0 and 'Note' not in result.output, result.output
    image = nib.load(tmp_path / 'out' / 'seed0000.nii.gz')
    spacing = nib.affines.voxel_sizes(image.affine)
    assert np.allclose(spacing, (2, 2, 4), atol=1e-5)
    assert np.allclose(image.affine[:3, :3] / spacing, LPS_TO_RAS @ OBLIQUE, atol=1e-5)  # The scan's direction.
    centre_ras = image.affine[:3, :3] @ ((np.asarray(image.shape) - 1) / 2) + image.affine[:3, 3]
    assert np.all(np.abs(LPS_TO_RAS @ centre_ras - CENTRE) < spacing)  # Over the scan's centre, within a voxel.

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


def test_dataset_record_is_what_the_network_keeps(oblique_scan, tmp_path):
    pack(oblique_scan, tmp_path / 'd.zip', '--interp', 'bspline')
    info = VolumeFolderDataset(str(tmp_path / 'd.zip')).volume_info
    assert info.interpolation == 'bspline' and info.orientation == 'LPS'
    assert np.allclose(np.reshape(info.direction, (3, 3)), OBLIQUE, atol=1e-6)


def test_previews_are_enlarged_by_a_whole_factor_keeping_proportions():
    volume = np.random.RandomState(0).rand(1, 16, 32, 32).astype(np.float32)  # 32x32x16, 1 x 1 x 2 mm
    grid = visualize.middle_slices(volume, planes=visualize.PLANES, spacing=(1.0, 1.0, 2.0), min_size=256)
    assert grid.shape == (1, 256, 3 * 256)  # Each plane 32 x 32 mm -> 32 x 32 px, enlarged 8 times.
    axial = visualize.middle_slices(volume, spacing=(1.0, 1.0, 2.0), min_size=256)[0]
    assert np.array_equal(axial[::8, ::8], volume[0, 8]) and np.array_equal(axial[7::8, 7::8], volume[0, 8])
    anisotropic = visualize.middle_slices(volume[:, :, :, :20], planes=('axial',), min_size=100)
    assert anisotropic.shape == (1, 32 * 4, 20 * 4)  # The long side 32 -> 128 >= 100; the aspect is kept.
