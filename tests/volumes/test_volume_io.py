# SPDX-License-Identifier: Apache-2.0
"""volume_io: reading every format, canonical LPS orientation, physical resampling and atomic writing."""

import os
import re
import sys

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from tests.helpers.volumes import measured_radius, sphere_image, write_dicom_series
from volumes import volume_io
from volumes.contract import LPS_DIRECTION

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def rotated_affine(spacing, offset):
    """A NIfTI (RAS) affine whose voxel axes i, j, k run along world -y, +x, -z: permuted and flipped."""
    axes = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, -1]], dtype=np.float64)  # Columns: world direction of i, j, k.
    affine = np.eye(4)
    affine[:3, :3] = axes * np.asarray(spacing)[None, :]
    affine[:3, 3] = offset
    return affine


def lps_position(affine, ijk):
    return LPS_FROM_RAS @ (affine[:3, :3] @ np.asarray(ijk, dtype=np.float64) + affine[:3, 3])


def test_nifti_reorients_to_lps_and_keeps_a_marker_in_place(tmp_path):
    spacing = (0.8, 1.1, 2.5)
    data = np.zeros((10, 12, 6), dtype=np.float32)  # i, j, k
    data[2, 9, 1] = 100
    affine = rotated_affine(spacing, (5.0, -3.0, 20.0))
    nib.save(nib.Nifti1Image(data, affine), tmp_path / 'v.nii.gz')

    image = volume_io.reorient(volume_io.read_image(str(tmp_path / 'v.nii.gz')))
    assert np.allclose(image.GetDirection(), LPS_DIRECTION)
    # Voxel i runs along world y, j along x, k along z: the canonical (x, y, z) spacing is (s_j, s_i, s_k).
    assert np.allclose(image.GetSpacing(), (1.1, 0.8, 2.5))
    array = volume_io.image_to_array(image)  # [D, H, W] = [z, y, x]
    assert array.shape == (6, 10, 12)
    z, y, x = np.argwhere(array == 100)[0]
    assert np.allclose(image.TransformIndexToPhysicalPoint((int(x), int(y), int(z))), lps_position(affine, (2, 9, 1)))


def test_ras_default_affine_is_flipped_in_x_and_y(tmp_path):
    data = np.zeros((4, 5, 3), dtype=np.int16)
    data[0, 0, 0] = 7
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / 'ras.nii')
    array = volume_io.read_volume_array(str(tmp_path / 'ras.nii'))
    assert array.shape == (3, 5, 4) and array[0, 4, 3] == 7  # x towards R becomes x towards L: index flips.


@pytest.mark.parametrize('ext', ['.nrrd', '.mha', '.nii', '.nii.gz'])
def test_write_then_read_round_trip_with_geometry(tmp_path, ext):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 255, size=(5, 6, 7)).astype(np.uint8)
    path = str(tmp_path / f'out{ext}')
    volume_io.write_volume(path, array, (0.5, 0.75, 3.0), LPS_DIRECTION, origin=(1, 2, 3))
    image = sitk.ReadImage(path)
    assert np.array_equal(sitk.GetArrayFromImage(image), array)
    assert np.allclose(image.GetSpacing(), (0.5, 0.75, 3.0)) and np.allclose(image.GetOrigin(), (1, 2, 3))
    assert sitk.GetArrayFromImage(image).dtype == np.uint8
    assert oct(os.stat(path).st_mode & 0o777) != oct(0o600)  # Not left with mkstemp's private mode.
    assert sorted(os.listdir(tmp_path)) == [f'out{ext}']      # No temporary file left behind.


def test_write_keeps_direction_and_centres_the_volume(tmp_path):
    direction = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    path = str(tmp_path / 'rot.nii.gz')
    volume_io.write_volume(path, np.ones((4, 6, 8), np.float32), (1.0, 2.0, 3.0), direction)
    image = sitk.ReadImage(path)
    assert np.allclose(image.GetDirection(), direction, atol=1e-6)
    assert np.allclose(volume_io.image_grid(image).centre, 0, atol=1e-5)
    affine = nib.load(path).affine
    assert np.allclose(nib.affines.voxel_sizes(affine), (1, 2, 3))


def test_multichannel_and_npy_writing(tmp_path):
    array = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5)  # [C, D, H, W]
    volume_io.write_volume(str(tmp_path / 'mc.nii.gz'), array, (1, 1, 1), LPS_DIRECTION)
    assert np.array_equal(volume_io.read_volume_array(str(tmp_path / 'mc.nii.gz')), array)
    volume_io.write_volume(str(tmp_path / 'mc.npy'), array, (1, 1, 1), LPS_DIRECTION)
    assert np.array_equal(np.load(tmp_path / 'mc.npy'), array)
    assert np.array_equal(volume_io.read_volume_array(str(tmp_path / 'mc.npy')), array)


@pytest.mark.parametrize('path, array, spacing, direction, message', [
    ('x.png', np.zeros((2, 2, 2)), (1, 1, 1), LPS_DIRECTION, 'extension must be one of'),
    ('x.nii', np.zeros((2, 2)), (1, 1, 1), LPS_DIRECTION, r'\[D, H, W\]'),
    ('x.nii', np.zeros((2, 2, 2)), (1, 0, 1), LPS_DIRECTION, 'spacing must be three positive'),
    ('x.nii', np.zeros((2, 2, 2)), (1, 1, 1), (1, 0, 0) * 3, 'direction must be 9 floats forming a rotation'),
])
def test_write_rejects_bad_arguments(tmp_path, path, array, spacing, direction, message):
    with pytest.raises(ValueError, match=message):
        volume_io.write_volume(str(tmp_path / path), array, spacing, direction)
    assert not os.listdir(tmp_path)


def test_resampling_keeps_physical_size():
    source = sphere_image((0.6, 0.8, 3.0), 9.0, (48, 36, 10))
    grid = volume_io.target_grid(source, spacing=(1.0, 1.0, 1.0))
    assert grid.size == (29, 29, 30)  # Extent 28.8 x 28.8 x 30 mm at 1 mm.
    out = volume_io.resample(source, grid)
    assert np.allclose(volume_io.image_grid(out).centre, volume_io.image_grid(source).centre)
    array = volume_io.image_to_array(out)
    assert abs(measured_radius(array, (1, 1, 1)) - 9.0) < 0.5
    # Along each axis through the centre, the half-height width is the diameter within a voxel.
    cz, cy, cx = (np.asarray(array.shape) - 1) // 2  # The voxel nearest the centre (at most 0.5 mm off).
    for profile in (array[:, cy, cx], array[cz, :, cx], array[cz, cy, :]):
        assert abs((profile > 0.5).sum() - 18) <= 1


def test_target_grid_fov_size_and_spacing():
    image = sitk.Image(100, 80, 20, sitk.sitkFloat32)
    image.SetSpacing((0.5, 0.5, 3.0))
    # fov and size: spacing = fov / size, centred on the image.
    grid = volume_io.target_grid(image, size=(32, 32, 10), fov=(64.0, 64.0, 60.0))
    assert grid.size == (32, 32, 10) and np.allclose(grid.spacing, (2.0, 2.0, 6.0))
    assert np.allclose(grid.centre, volume_io.image_grid(image).centre)
    # spacing and size without fov: the box is size * spacing.
    grid = volume_io.target_grid(image, size=(40, 40, 20), spacing=(1.0, 1.0, 3.0))
    assert np.allclose(grid.spacing, (1.0, 1.0, 3.0))
    # Nothing asked: the image's own grid, and resample returns it untouched.
    assert volume_io.same_grid(volume_io.target_grid(image), volume_io.image_grid(image))


def test_padding_uses_the_background_and_crop_is_centred():
    array = np.full((4, 10, 10), 5.0, dtype=np.float32)
    array[:, 4:6, 4:6] = 50
    image = sitk.GetImageFromArray(array)
    grid = volume_io.target_grid(image, fov=(14.0, 6.0, 4.0))  # Pad x by 2 mm each side, crop y by 2 mm.
    out = volume_io.image_to_array(volume_io.resample(image, grid))
    assert out.shape == (4, 6, 14)
    assert np.all(out[:, :, :2] == 5) and np.all(out[:, 2:4, 6:8] == 50)  # Pad value = the image minimum.


def test_dicom_series_read(tmp_path):
    volume = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)  # [D, H, W]
    write_dicom_series(tmp_path, volume, spacing=(0.7, 0.9, 2.0))
    series = volume_io.find_dicom_series(str(tmp_path))
    assert len(series) == 1 and len(series[0][1]) == 4
    image = volume_io.read_dicom_series(series[0][1])
    assert np.array_equal(sitk.GetArrayFromImage(image), volume)
    assert np.allclose(image.GetSpacing(), (0.7, 0.9, 2.0))
    assert np.array_equal(volume_io.read_volume_array(str(tmp_path)), volume)
    os.remove(series[0][1][2])  # A missing slice is an error, not a silently shorter volume.
    with pytest.raises(ValueError, match='uneven, duplicate or missing slices'):
        volume_io.read_dicom_series(volume_io.find_dicom_series(str(tmp_path))[0][1])


def test_one_dicom_file_stands_for_its_series(tmp_path):
    # Two series in one folder: the file picks its own (projector.py --target and every read_any caller).
    volume = np.arange(4 * 6 * 5, dtype=np.int16).reshape(4, 6, 5)  # [D, H, W]
    write_dicom_series(tmp_path, volume, spacing=(0.7, 0.9, 2.0))
    write_dicom_series(tmp_path, volume[:3] + 1000, spacing=(0.7, 0.9, 2.0), uid='1.2.826.0.1.3680043.2.1125.2',
                       extension='.ima')
    assert np.array_equal(volume_io.read_volume_array(str(tmp_path / 'slice002.dcm')), volume)
    assert np.array_equal(volume_io.read_volume_array(str(tmp_path / 'slice000.ima')), volume[:3] + 1000)
    with pytest.raises(ValueError, match='holds 2 DICOM series; expected exactly one'):
        volume_io.read_any(str(tmp_path))


@pytest.mark.parametrize('make, message', [
    (lambda d: np.save(d / 'flat.npy', np.zeros((4, 4), np.float32)), 'is a 2D array'),
    (lambda d: np.save(d / 'hyper.npy', np.zeros((2, 3, 4, 4), np.float32)), 'is a 4D array'),
    (lambda d: np.save(d / 'empty.npy', np.zeros((0, 4, 4), np.float32)), 'is empty'),
    (lambda d: nib.save(nib.Nifti1Image(np.zeros((6, 6, 1), np.float32), np.eye(4)), d / 'one.nii.gz'),
     'is a 2D image'),
    (lambda d: nib.save(nib.Nifti1Image(np.zeros((6, 6, 4, 3), np.float32), np.eye(4)), d / 'four.nii.gz'),
     'is a 4D image'),
    (lambda d: (d / 'junk.nrrd').write_bytes(b'not a volume'), 'cannot read'),
])
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, make, message):
    make(tmp_path)
    path = str(tmp_path / os.listdir(tmp_path)[0])
    with pytest.raises(ValueError, match=message) as info:
        volume_io.read_image(path)
    assert path in str(info.value) and '\n' not in str(info.value)


def test_truncated_nifti_is_detected(tmp_path):
    # ITK itself fills the missing part of a truncated NIfTI with zeros without complaint.
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 10).astype(np.float32), np.eye(4)), tmp_path / 'a.nii.gz')
    nib.save(nib.Nifti1Image(np.random.rand(20, 20, 10).astype(np.float32), np.eye(4)), tmp_path / 'a.nii')
    for name in ('a.nii.gz', 'a.nii'):
        data = (tmp_path / name).read_bytes()
        (tmp_path / f't{name}').write_bytes(data[:len(data) // 2])
        with pytest.raises(ValueError, match='is truncated') as info:
            volume_io.read_image(str(tmp_path / f't{name}'))
        assert f't{name}' in str(info.value) and '\n' not in str(info.value)


def test_a_nifti_short_by_less_than_its_header_is_truncated(tmp_path):
    # nibabel resets the vox_offset of an image's header copy to 0: the check once ignored the 352 header bytes, and
    # a file 200 bytes short was read with 200 voxels of 0.
    volume = np.full((8, 32, 32), 7, np.uint8)
    volume_io.write_volume(str(tmp_path / 'a.nii'), volume, (1, 1, 1), LPS_DIRECTION)
    data = (tmp_path / 'a.nii').read_bytes()
    assert len(data) == 352 + volume.size
    (tmp_path / 'short.nii').write_bytes(data[:-200])
    with pytest.raises(ValueError, match=f'short.nii is truncated: {len(data) - 200} bytes, its header needs '
                                         f'{len(data)}'):
        volume_io.read_image(str(tmp_path / 'short.nii'))
    assert (sitk.GetArrayFromImage(volume_io.read_image(str(tmp_path / 'a.nii'))) == 7).all()


def test_what_c_code_prints_on_fd_2_is_captured(capfd):
    # ITK's NIfTI writer prints a short write on file descriptor 2 itself; os.write stands in for its fprintf.
    print('before', file=sys.stderr, flush=True)
    with volume_io.native_stderr_captured() as said:
        os.write(2, b'** ERROR: NWAD: wrote only 5648 of 16384 bytes to file\n' + b'x' * 200_000 + b'\n')
    print('after', file=sys.stderr, flush=True)
    assert capfd.readouterr().err == 'before\nafter\n'  # Nothing reached the terminal, 200 kB did not block.
    assert said[0] == '** ERROR: NWAD: wrote only 5648 of 16384 bytes to file' and len(said[1]) == 200_000
    assert volume_io.native_message(said[:1]) == 'wrote only 5648 of 16384 bytes to file'


def test_corrupt_streams_and_itk_errors_are_one_line(tmp_path):
    volume = np.random.default_rng(0).random((12, 12, 6)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / 'c.nii.gz')
    data = bytearray((tmp_path / 'c.nii.gz').read_bytes())
    middle = slice(len(data) // 2, len(data) // 2 + 200)  # Same length, garbled data past the header.
    data[middle] = bytes((b * 7 + 3) % 256 for b in data[middle])
    (tmp_path / 'c.nii.gz').write_bytes(bytes(data))
    # A raw float NRRD without an endianness: ITK refuses it with a long message citing its own sources.
    (tmp_path / 'e.nrrd').write_bytes(b'NRRD0004\ntype: float\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n\n'
                                      + bytes(256))
    for name, message in (('c.nii.gz', 'is corrupt'), ('e.nrrd', 'cannot read')):
        with pytest.raises(ValueError, match=message) as info:
            volume_io.read_image(str(tmp_path / name))
        text = str(info.value)
        assert str(tmp_path / name) in text and '\n' not in text
        assert '.cxx' not in text and not re.search(r'\(0x[0-9a-f]+\)', text)  # No ITK source lines or pointers.
