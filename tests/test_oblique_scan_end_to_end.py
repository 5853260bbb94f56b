# SPDX-License-Identifier: Apache-2.0
"""The volume contract end to end, across dataset_tool.py, train.py and generate.py: an oblique scan is packed with
its direction and centre, the dataset's record is what the network keeps, and a network trained on it writes volumes
that overlay the scan (also after the dataset is gone)."""

import os

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import dataset_tool
import generate
import train
from tests.helpers.training import TINY_CFG
from tests.helpers.volumes import blob_centroid, read_zip, sitk_blob_image
from training.dataset import VolumeFolderDataset

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


def test_dataset_record_is_what_the_network_keeps(oblique_scan, tmp_path):
    pack(oblique_scan, tmp_path / 'd.zip', '--interp', 'bspline')
    info = VolumeFolderDataset(str(tmp_path / 'd.zip')).volume_info
    assert info.interpolation == 'bspline' and info.orientation == 'LPS'
    assert np.allclose(np.reshape(info.direction, (3, 3)), OBLIQUE, atol=1e-6)


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
