# SPDX-License-Identifier: Apache-2.0
"""dataset_tool.py end to end on real files: every source format, geometry, sequences, labels and bad inputs."""

import glob
import json
import os
import signal
import subprocess
import sys
import time
import zipfile

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from click.testing import CliRunner

import dataset_tool
from tests.helpers.cli import assert_clean_failure, run_cli
from tests.helpers.volumes import (blob, blob_centroid, measured_radius, read_zip, sitk_blob_image, sphere_image,
                                   write_dicom_series)
from training.dataset import VolumeFolderDataset

LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])


def pack(*args):
    return CliRunner().invoke(dataset_tool.main, [str(a) for a in args])


def leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith('.') or n.endswith(('.zip', '.tmp'))]

#----------------------------------------------------------------------------
# Sources with a smooth blob at a known world position (LPS, mm).


def write_source(fmt, folder, blob_lps):
    """Write one volume in format fmt whose grid is centred at the world origin; returns the source path."""
    os.makedirs(folder, exist_ok=True)
    if fmt == 'nifti':  # Written by nibabel with permuted and flipped axes and anisotropic voxels.
        shape, spacing = (20, 30, 10), (1.5, 1.0, 3.0)
        axes = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, -1]], dtype=np.float64)  # Columns: RAS direction of i, j, k.
        affine = np.eye(4)
        affine[:3, :3] = axes * np.asarray(spacing)[None, :]
        affine[:3, 3] = -affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
        ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing='ij'), -1)
        points = (ijk @ affine[:3, :3].T + affine[:3, 3]) @ LPS_FROM_RAS.T
        path = os.path.join(folder, 'case.nii.gz')
        nib.save(nib.Nifti1Image(blob(points, blob_lps).astype(np.float32), affine), path)
        return path
    if fmt in ('nrrd', 'nhdr', 'mha', 'mhd'):  # .nhdr and .mhd are detached headers beside a data file.
        direction = (-1, 0, 0, 0, 0, 1, 0, 1, 0)  # x flipped, y and z swapped.
        path = os.path.join(folder, f'case.{fmt}')
        sitk.WriteImage(sitk_blob_image((30, 15, 20), (1.0, 2.0, 1.5), direction, (0, 0, 0), blob_lps), path)
        return path
    if fmt == 'npy':  # .npy is [D, H, W] at 1 mm with identity direction; centre it by the formula.
        image = sitk_blob_image((30, 30, 30), (1.0, 1.0, 1.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
                                (14.5, 14.5, 14.5), np.asarray(blob_lps) + 14.5)
        path = os.path.join(folder, 'case.npy')
        np.save(path, sitk.GetArrayFromImage(image))
        return path
    image = sitk_blob_image((30, 30, 10), (1.0, 1.0, 3.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), blob_lps)
    volume = np.rint(sitk.GetArrayFromImage(image)).astype(np.int16)
    write_dicom_series(os.path.join(folder, 'series1'), volume, (1.0, 1.0, 3.0), origin=image.GetOrigin(),
                       extension='' if fmt == 'dicom-noext' else '.dcm')
    return os.path.join(folder, 'series1')


@pytest.mark.parametrize('fmt', ['nifti', 'nrrd', 'nhdr', 'mha', 'mhd', 'npy', 'dicom', 'dicom-noext'])
def test_each_format_packs_with_size_spacing_and_orientation(tmp_path, fmt):
    blob_lps = (5.0, -4.0, 6.0)  # Towards the patient's left, anterior and superior of the centre.
    write_source(fmt, tmp_path / 'src', blob_lps)
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--size', '16x14x10',
                  '--spacing', '2,2,3', '--clip', '0,100')
    assert result.exit_code == 0, result.output
    assert 'Wrote 1 volume' in result.output
    info, arrays = read_zip(tmp_path / 'out.zip')
    assert info['shape'] == [1, 10, 14, 16] and info['volume_info']['spacing'] == [2.0, 2.0, 3.0]
    assert info['volume_info']['orientation'] == 'LPS' and info['volume_info']['direction'] == [1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert info['format'] == 'stylegan2-ada-3d/1' and info['volume_info']['intensity']['dtype'] == 'uint8'
    assert info['labels'] is None and info['sources'][0][0] == '00000/vol00000000.npy'
    volume = arrays['00000/vol00000000.npy']
    assert volume.dtype == np.uint8 and volume.shape == (1, 10, 14, 16)
    # The output grid is centred on the source's centre (the world origin): index = centre + offset / spacing.
    expected = (np.array([16, 14, 10]) - 1) / 2 + np.asarray(blob_lps) / np.array([2.0, 2.0, 3.0])
    assert np.allclose(blob_centroid(volume[0]), expected, atol=0.5), (blob_centroid(volume[0]), expected)


@pytest.mark.parametrize('args, shape, spacing', [
    (['--spacing', '3'], [10, 10, 10], [3.0, 3.0, 3.0]),                      # The source's 30 mm box at 3 mm.
    (['--fov', '24,36,15'], [10, 18, 24], [1.0, 2.0, 1.5]),                   # Crop x and z, pad y; own spacing.
    (['--fov', '24,36,15', '--size', '12x12x5'], [5, 12, 12], [2.0, 3.0, 3.0]),  # Spacing = fov / size.
])
def test_spacing_and_fov_give_the_physical_grid(tmp_path, args, shape, spacing):
    blob_lps = (5.0, -4.0, 3.0)
    os.makedirs(tmp_path / 'src')
    image = sitk_blob_image((30, 15, 20), (1.0, 2.0, 1.5), (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), blob_lps)
    sitk.WriteImage(image, str(tmp_path / 'src' / 'case.mha'))  # A 30 x 30 x 30 mm box centred at 0.
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--clip', '0,100', *args)
    assert result.exit_code == 0, result.output
    info, arrays = read_zip(tmp_path / 'out.zip')
    assert info['shape'] == [1, *shape] and info['volume_info']['spacing'] == spacing
    volume = arrays['00000/vol00000000.npy'][0]  # [D, H, W]
    expected = (np.array(shape[::-1]) - 1) / 2 + np.asarray(blob_lps) / np.asarray(spacing)
    assert np.allclose(blob_centroid(volume), expected, atol=0.5), (blob_centroid(volume), expected)
    if '--fov' in args:  # y is padded with the background (the lowest value), x is cropped inside the image.
        assert volume[:, 0, :].max() == 0 and volume[:, -1, :].max() == 0 and volume[:, 2:-2, 0].min() > 0


def test_reorientation_alone_moves_a_marker_voxel_exactly(tmp_path):
    data = np.zeros((6, 8, 5), dtype=np.float32)  # i, j, k
    data[1, 6, 3] = 10
    affine = np.array([[0, 1.5, 0, 3], [-2, 0, 0, 1], [0, 0, -2.5, 7], [0, 0, 0, 1]], dtype=np.float64)
    os.makedirs(tmp_path / 'src')
    nib.save(nib.Nifti1Image(data, affine), tmp_path / 'src' / 'm.nii.gz')
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--clip', '0,100')
    assert result.exit_code == 0, result.output
    info, arrays = read_zip(tmp_path / 'out.zip')
    volume = arrays['00000/vol00000000.npy'][0]  # [D, H, W]
    # i runs along world -y (RAS) = +y (LPS), j along +x (RAS) = -x (LPS), k along -z: x <- flipped j, y <- i,
    # z <- flipped k.
    assert volume.shape == (5, 6, 8) and info['volume_info']['spacing'] == [1.5, 2.0, 2.5]
    assert np.argwhere(volume == 255).tolist() == [[5 - 1 - 3, 1, 8 - 1 - 6]]


@pytest.mark.parametrize('spacing', [(1.0, 1.0, 1.0), (0.75, 0.75, 2.0)])
def test_sphere_keeps_its_physical_radius(tmp_path, spacing):
    os.makedirs(tmp_path / 'src')
    sitk.WriteImage(sphere_image((0.6, 0.8, 3.0), 9.0, (48, 36, 10)), str(tmp_path / 'src' / 'sphere.nii.gz'))
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--spacing',
                  ','.join(map(str, spacing)), '--fov', '30,30,30', '--clip', '0,100')
    assert result.exit_code == 0, result.output
    info, arrays = read_zip(tmp_path / 'out.zip')
    size_xyz = [round(30 / s) for s in spacing]
    assert info['shape'] == [1, *size_xyz[::-1]] and info['volume_info']['spacing'] == list(spacing)
    volume = arrays['00000/vol00000000.npy'][0] / 255.0  # [D, H, W]
    assert abs(measured_radius(volume, spacing) - 9.0) < min(spacing)  # Within a voxel.
    # The half-height width through the centre is the 18 mm diameter within a voxel along each axis.
    cz, cy, cx = (np.asarray(volume.shape) - 1) // 2
    for profile, step in ((volume[cz, cy, :], spacing[0]), (volume[cz, :, cx], spacing[1]),
                          (volume[:, cy, cx], spacing[2])):
        assert abs((profile > 0.5).sum() * step - 18.0) <= step


def test_three_sequences_on_different_grids_pack_aligned(tmp_path):
    blob_lps = (6.0, 5.0, -4.0)
    grids = {  # Per sequence: size, spacing, direction, centre (mm), intensity scale; all cover a 40 mm box.
        't2w': ((80, 80, 10), (0.5, 0.5, 4.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (0, 0, 0), 1.0),
        'adc': ((20, 20, 10), (2.0, 2.0, 4.0), (1, 0, 0, 0, 1, 0, 0, 0, 1), (1.0, -1.0, 0), 0.2),
        'hbv': ((16, 16, 8), (2.5, 2.5, 5.0), (-1, 0, 0, 0, -1, 0, 0, 0, 1), (-1.0, 0, 2.0), 3.0),
    }
    for case in ('p001', 'p002'):
        for seq, (size, spacing, direction, centre, scale) in grids.items():
            if case == 'p002' and seq == 'hbv':
                continue  # p002 lacks a sequence: reported and skipped.
            folder = tmp_path / 'src' / case
            os.makedirs(folder, exist_ok=True)
            image = sitk_blob_image(size, spacing, direction, centre, blob_lps) * scale
            sitk.WriteImage(image, str(folder / f'{case}_{seq}.nii.gz'))
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--size', '20x20x10',
                  '--channels', '*_t2w.nii.gz,*_adc.nii.gz,*_hbv.nii.gz', '--clip', '0,100', '--on-error', 'skip')
    assert result.exit_code == 0, result.output
    assert 'Wrote 1 volume' in result.output
    assert 'skipped p002: case "p002" has no file for *_hbv.nii.gz' in result.output
    info, arrays = read_zip(tmp_path / 'out.zip')
    assert info['volume_info']['channels'] == ['t2w', 'adc', 'hbv'] and info['channels_are_sequences'] is True
    assert info['shape'] == [3, 10, 20, 20] and info['volume_info']['spacing'] == [2.0, 2.0, 4.0]  # The T2W box over the size.
    assert info['sources'] == [['00000/vol00000000.npy', 'p001']]
    volume = arrays['00000/vol00000000.npy']
    expected = (np.array([20, 20, 10]) - 1) / 2 + np.asarray(blob_lps) / np.array([2.0, 2.0, 4.0])
    for c in range(3):
        assert volume[c].min() == 0 and volume[c].max() == 255  # Each channel normalised on its own scale.
        assert np.allclose(blob_centroid(volume[c]), expected, atol=0.5), (c, blob_centroid(volume[c]))
    ds = VolumeFolderDataset(str(tmp_path / 'out.zip'))
    assert ds.num_channels == 3 and ds.channel_names == ['t2w', 'adc', 'hbv'] and ds.channels_are_sequences
    stop = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'stop.zip', '--size', '20x20x10',
                '--channels', '*_t2w.nii.gz,*_adc.nii.gz,*_hbv.nii.gz', '--on-error', 'stop')
    assert stop.exit_code == 1 and 'case "p002" has no file for *_hbv.nii.gz' in stop.output
    assert not os.path.exists(tmp_path / 'stop.zip')


def write_npy_cases(folder, names, shape=(4, 6, 8)):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        np.save(os.path.join(folder, f'{name}.npy'), rng.random(shape).astype(np.float32))


def test_labels_from_csv_and_json_and_onehot_dataset(tmp_path):
    write_npy_cases(tmp_path / 'src', ['a', 'b', 'c'])
    (tmp_path / 'labels.csv').write_text('file,class\na.npy,2\nb,0\nc,1\n')  # Full name or stem.
    (tmp_path / 'labels.json').write_text(json.dumps({'a': [0.5, 1.0], 'b.npy': [1.5, 2.0], 'c': [2.5, 3.0]}))
    assert pack('--source', tmp_path / 'src', '--dest', tmp_path / 'csv.zip', '--labels',
                tmp_path / 'labels.csv').exit_code == 0
    assert pack('--source', tmp_path / 'src', '--dest', tmp_path / 'json', '--labels',
                tmp_path / 'labels.json').exit_code == 0  # A folder destination.
    info, _ = read_zip(tmp_path / 'csv.zip')
    assert info['labels'] == [['00000/vol00000000.npy', 2], ['00000/vol00000001.npy', 0],
                              ['00000/vol00000002.npy', 1]]
    ds = VolumeFolderDataset(str(tmp_path / 'csv.zip'), use_labels=True)
    assert ds.has_onehot_labels and [ds[i][1].tolist() for i in range(3)] == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    ds = VolumeFolderDataset(str(tmp_path / 'json'), use_labels=True)
    assert not ds.has_onehot_labels and ds[1][1].tolist() == [1.5, 2.0]


def test_dicom_folders_recursive_and_zip_source(tmp_path):
    volume = np.arange(3 * 8 * 8, dtype=np.int16).reshape(3, 8, 8)
    write_dicom_series(tmp_path / 'src' / 'pat1' / 'mr', volume, (1.0, 1.0, 2.0), uid='1.2.3.1')
    write_dicom_series(tmp_path / 'src' / 'pat2', volume[:, ::-1], (1.0, 1.0, 2.0), uid='1.2.3.2', extension='')
    write_dicom_series(tmp_path / 'src' / 'pat2', volume[::-1], (1.0, 1.0, 2.0), uid='1.2.3.3', origin=(0, 0, 50))
    write_npy_cases(tmp_path / 'src' / 'npy', ['x'], shape=(3, 8, 8))
    with zipfile.ZipFile(tmp_path / 'src.zip', 'w') as z:
        for root, _, names in os.walk(tmp_path / 'src'):
            for n in names:
                z.write(os.path.join(root, n), os.path.relpath(os.path.join(root, n), tmp_path / 'src'))
    for source in ('src', 'src.zip'):
        result = pack('--source', tmp_path / source, '--dest', tmp_path / f'{source}-out.zip', '--clip', '0,100')
        assert result.exit_code == 0, result.output
        info, arrays = read_zip(tmp_path / f'{source}-out.zip')
        assert [s for _, s in info['sources']] == ['npy/x.npy', 'pat1/mr', 'pat2#1.2.3.2', 'pat2#1.2.3.3']
        assert info['shape'] == [1, 3, 8, 8]
        expected = np.rint(volume.astype(np.float64) * 255 / volume.max())
        assert np.array_equal(arrays['00000/vol00000001.npy'][0], expected)
        assert np.array_equal(arrays['00000/vol00000002.npy'][0], expected[:, ::-1])


def test_phantom_source_max_volumes_and_determinism(tmp_path):
    for name in ('a.zip', 'b.zip'):
        result = pack('--source', 'phantom:5:100', '--dest', tmp_path / name, '--size', '16x16x8',
                      '--max-volumes', '3')
        assert result.exit_code == 0, result.output
    info, arrays = read_zip(tmp_path / 'a.zip')
    assert len(arrays) == 3 and [s for _, s in info['sources']] == ['phantom:100', 'phantom:101', 'phantom:102']
    assert (tmp_path / 'a.zip').read_bytes() == (tmp_path / 'b.zip').read_bytes()  # Reproducible archives.
    assert info['volume_info']['intensity'] == dict(kind='percentile', lo=0.5, hi=99.5, dtype='uint8')


def test_default_clipping_is_the_0_5_and_99_5_percentiles(tmp_path):
    os.makedirs(tmp_path / 'src')
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    ramp[0, 0, :3], ramp[-1, -1, -3:] = -1e4, 1e4  # Outliers that min/max scaling would let dominate.
    np.save(tmp_path / 'src' / 'ramp.npy', ramp)
    assert pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip').exit_code == 0
    info, arrays = read_zip(tmp_path / 'out.zip')
    lo, hi = np.percentile(ramp, [0.5, 99.5])
    expected = np.rint(np.clip((ramp - lo) / (hi - lo), 0, 1) * 255)
    volume = arrays['00000/vol00000000.npy'][0]
    assert volume.dtype == np.uint8 and np.abs(volume.astype(np.float64) - expected).max() <= 1
    assert info['volume_info']['intensity'] == dict(kind='percentile', lo=0.5, hi=99.5, dtype='uint8')


def test_uint16_and_percentile_clipping(tmp_path):
    os.makedirs(tmp_path / 'src')
    ramp = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    np.save(tmp_path / 'src' / 'ramp.npy', ramp)
    assert pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--dtype', 'uint16',
                '--clip', '10,90').exit_code == 0
    _, arrays = read_zip(tmp_path / 'out.zip')
    volume = arrays['00000/vol00000000.npy'][0]
    lo, hi = np.percentile(ramp, [10, 90])
    expected = np.rint(np.clip((ramp - lo) / (hi - lo), 0, 1) * 65535)
    assert volume.dtype == np.uint16 and np.abs(volume.astype(np.float64) - expected).max() <= 1

#----------------------------------------------------------------------------
# Bad inputs: one-line errors naming the file, skips with reasons, and nothing left on failure.


def make_bad(folder, kind):
    """Write a bad volume of the given kind in folder; returns its name."""
    os.makedirs(folder, exist_ok=True)
    if kind == 'truncated':
        nib.save(nib.Nifti1Image(np.random.rand(12, 12, 6).astype(np.float32), np.eye(4)), folder / 'bad.nii.gz')
        data = (folder / 'bad.nii.gz').read_bytes()
        (folder / 'bad.nii.gz').write_bytes(data[:len(data) // 2])
        return 'bad.nii.gz'
    if kind == 'corrupt':  # Complete length, garbled deflate stream.
        volume = np.random.default_rng(0).random((12, 12, 6)).astype(np.float32)
        nib.save(nib.Nifti1Image(volume, np.eye(4)), folder / 'bad.nii.gz')
        data = bytearray((folder / 'bad.nii.gz').read_bytes())
        middle = slice(len(data) // 2, len(data) // 2 + 200)  # Past the header, which must still read.
        data[middle] = bytes((b * 7 + 3) % 256 for b in data[middle])
        (folder / 'bad.nii.gz').write_bytes(bytes(data))
        return 'bad.nii.gz'
    if kind == '2d':
        nib.save(nib.Nifti1Image(np.random.rand(8, 6).astype(np.float32), np.eye(4)), folder / 'bad.nii')
        return 'bad.nii'
    if kind == '4d':
        nib.save(nib.Nifti1Image(np.random.rand(8, 6, 4, 2).astype(np.float32), np.eye(4)), folder / 'bad.nii.gz')
        return 'bad.nii.gz'
    if kind == 'zero-size':
        np.save(folder / 'bad.npy', np.zeros((0, 6, 8), np.float32))
        return 'bad.npy'
    np.save(folder / 'bad.npy', np.random.rand(4, 6, 9).astype(np.float32))  # 'mixed': another size.
    return 'bad.npy'


@pytest.mark.parametrize('kind, message', [
    ('truncated', 'is truncated'),
    ('corrupt', 'is corrupt'),
    ('2d', 'is a 2D image'),
    ('4d', 'is a 4D image'),
    ('zero-size', 'is empty'),
    ('mixed', 'pass --size'),
])
def test_bad_volume_stops_or_is_skipped(tmp_path, kind, message):
    write_npy_cases(tmp_path / 'src', ['a_good'])
    name = make_bad(tmp_path / 'src', kind)
    os.makedirs(tmp_path / 'out')
    stop = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out' / 'd.zip', '--on-error', 'stop')
    assert stop.exit_code == 1 and message in stop.output and name in stop.output, stop.output
    assert isinstance(stop.exception, SystemExit)  # A ClickException, not an escaped traceback.
    error_lines = [line for line in stop.output.splitlines() if line.startswith('Error')]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert os.listdir(tmp_path / 'out') == []  # No archive and no temporary file.

    fail = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out' / 'd.zip')  # The default: name, write none.
    assert fail.exit_code == 1 and isinstance(fail.exception, SystemExit), fail.output
    assert fail.output.splitlines()[-2].startswith(f'  failed {name}:') and message in fail.output.splitlines()[-2]
    assert fail.output.splitlines()[-1] == (f'Error: 1 of 2 inputs could not be packed: {name} (reasons listed '
                                            f'above); nothing was written. Fix them, or pass --on-error=skip to pack '
                                            f'the other 1.')
    assert os.listdir(tmp_path / 'out') == []

    skip = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out' / 'd.zip', '--on-error', 'skip')
    assert skip.exit_code == 0, skip.output
    summary = skip.output.splitlines()[-2:]  # The summary comes last: the count, then one line per skip.
    assert summary[0].startswith('Wrote 1 volume') and 'skipped 1.' in summary[0]
    assert summary[1].startswith(f'  skipped {name}:') and message in summary[1]
    _, arrays = read_zip(tmp_path / 'out' / 'd.zip')
    assert len(arrays) == 1


def test_mixed_sizes_pack_with_size(tmp_path):
    write_npy_cases(tmp_path / 'src', ['a'], shape=(4, 6, 8))
    write_npy_cases(tmp_path / 'src', ['b'], shape=(5, 7, 9))
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--size', '8x6x4')
    assert result.exit_code == 0 and 'Wrote 2 volumes' in result.output, result.output


def test_empty_folder_and_all_skipped_leave_nothing(tmp_path):
    os.makedirs(tmp_path / 'empty')
    (tmp_path / 'empty' / 'notes.txt').write_text('no volumes here')
    result = pack('--source', tmp_path / 'empty', '--dest', tmp_path / 'out.zip')
    assert result.exit_code == 1 and 'no volumes (NIfTI, NRRD, MHA/MHD, .npy or DICOM) found' in result.output
    assert str(tmp_path / 'empty') in result.output and len(result.output.strip().splitlines()) == 1
    make_bad(tmp_path / 'bad', '2d')
    result = pack('--source', tmp_path / 'bad', '--dest', tmp_path / 'out.zip', '--on-error', 'skip')
    assert result.exit_code == 1 and 'no volumes were written' in result.output and 'bad.nii' in result.output
    assert sorted(os.listdir(tmp_path)) == ['bad', 'empty']


def test_when_every_input_fails_under_on_error_fail_they_are_named_as_failed(tmp_path):
    # The default --on-error=fail once answered "no volumes were written (2 skipped, e.g. ...)": nothing is skipped
    # under fail; the inputs failed and nothing was written.
    make_bad(tmp_path / 'src', '2d')
    make_bad(tmp_path / 'src', 'zero-size')
    result = run_cli(['dataset_tool.py', f'--source={tmp_path / "src"}', f'--dest={tmp_path / "out.zip"}'])
    line = assert_clean_failure(result, '2 of 2 inputs could not be packed: bad.nii, bad.npy (reasons listed above); '
                                        'nothing was written. Fix them.')
    assert 'skip' not in line and 'skipped' not in result.stdout
    assert result.stdout.splitlines() == [f'  failed bad.nii: {tmp_path / "src" / "bad.nii"} is a 2D image (size 8x6); '
                                          f'expected a 3D volume',
                                          f'  failed bad.npy: {tmp_path / "src" / "bad.npy"} is empty (size 8x6x0)']
    assert sorted(os.listdir(tmp_path)) == ['src']


def test_label_file_naming_missing_files(tmp_path):
    write_npy_cases(tmp_path / 'src', ['a', 'b'])
    (tmp_path / 'labels.csv').write_text('a,1\nb,0\nghost,1\n')
    stop = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--labels', tmp_path / 'labels.csv',
                '--on-error', 'stop')
    assert stop.exit_code == 1 and 'labels.csv' in stop.output and '"ghost"' in stop.output
    assert not os.path.exists(tmp_path / 'out.zip') and leftovers(tmp_path) == []
    skip = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--labels', tmp_path / 'labels.csv')
    assert skip.exit_code == 0 and 'warning:' in skip.output and '"ghost"' in skip.output
    # A volume without a label is a per-volume error.
    (tmp_path / 'labels.csv').write_text('a,1\n')
    fail = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out2.zip', '--labels', tmp_path / 'labels.csv')
    assert fail.exit_code == 1 and 'failed b.npy: no label for b.npy' in fail.output
    skip = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out2.zip', '--labels', tmp_path / 'labels.csv',
                '--on-error', 'skip')
    assert skip.exit_code == 0 and 'skipped b.npy: no label for b.npy' in skip.output


def test_unreadable_dicom_folder_is_named(tmp_path):
    write_npy_cases(tmp_path / 'src', ['a'])
    os.makedirs(tmp_path / 'src' / 'scans')
    (tmp_path / 'src' / 'scans' / 'junk.dcm').write_bytes(b'x' * 300)
    skip = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--on-error', 'skip')
    assert skip.exit_code == 0 and 'skipped scans: 1 DICOM file(s) in' in skip.output
    assert 'junk.dcm' in skip.output and 'no readable series' in skip.output
    stop = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'stop.zip', '--on-error', 'stop')
    assert stop.exit_code == 1 and 'junk.dcm' in stop.output and not os.path.exists(tmp_path / 'stop.zip')


@pytest.mark.parametrize('name, text', [
    ('labels.csv', 'a,1\nb,0\na,2\n'),
    ('labels.json', '{"a": 1, "b": 0, "a": 2}'),
])
def test_a_volume_labelled_twice_is_an_error(tmp_path, name, text):
    write_npy_cases(tmp_path / 'src', ['a', 'b'])
    (tmp_path / name).write_text(text)
    result = pack('--source', tmp_path / 'src', '--dest', tmp_path / 'out.zip', '--labels', tmp_path / name)
    assert result.exit_code == 1 and name in result.output and '"a" is listed twice' in result.output
    assert not os.path.exists(tmp_path / 'out.zip')


@pytest.mark.parametrize('args, message', [
    (['--size', '16x16'], '--size'),
    (['--size', '16x16x1'], 'integers >= 2'),
    (['--spacing', 'abc'], '--spacing'),
    (['--size', '0x16x8'], '--size'),
    (['--spacing', '1,2'], '--spacing'),
    (['--fov', 'a,b,c'], '--fov'),
    (['--clip', '90,10'], '--clip'),
    (['--channels', '*_t2w_*.nii'], 'exactly one "*"'),
    (['--dtype', 'float32'], '--dtype'),
])
def test_bad_options(tmp_path, args, message):
    result = pack('--source', 'phantom:2', '--dest', tmp_path / 'out.zip', *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert os.listdir(tmp_path) == []


def test_bad_sources_and_destinations(tmp_path):
    result = pack('--source', tmp_path / 'missing', '--dest', tmp_path / 'out.zip')
    assert result.exit_code == 1 and 'missing' in result.output and 'does not exist' in result.output
    result = pack('--source', 'phantom:x', '--dest', tmp_path / 'out.zip')
    assert result.exit_code == 1 and 'phantom:N' in result.output
    os.makedirs(tmp_path / 'full')
    (tmp_path / 'full' / 'x').write_text('')
    result = pack('--source', 'phantom:1', '--dest', tmp_path / 'full')
    assert result.exit_code == 1 and 'is not empty' in result.output
    result = pack('--source', 'phantom:1', '--dest', tmp_path / 'l.zip', '--labels', tmp_path / 'full' / 'x')
    assert result.exit_code == 1 and 'expected a .csv or .json' in result.output
    result = pack('--source', 'phantom:1', '--dest', tmp_path / 'full' / 'x' / 'out.zip')
    assert result.exit_code == 1 and 'is a file, not a folder' in result.output
    assert isinstance(result.exception, SystemExit)
    assert sorted(os.listdir(tmp_path)) == ['full'] and os.listdir(tmp_path / 'full') == ['x']


def test_a_full_disk_is_a_one_line_error_and_leaves_nothing(tmp_path, monkeypatch):
    def no_space(*args, **kwargs):
        raise OSError(28, 'No space left on device')

    monkeypatch.setattr(zipfile.ZipFile, 'writestr', no_space)
    result = pack('--source', 'phantom:3', '--dest', tmp_path / 'out.zip', '--size', '8x8x4')
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.output.strip() == f'Error: cannot write --dest {tmp_path / "out.zip"}: No space left on device'
    assert os.listdir(tmp_path) == []


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    original = dataset_tool.process_case
    calls = []

    def interrupt_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(dataset_tool, 'process_case', interrupt_on_third)
    for dest in ('out.zip', 'out_dir'):
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            dataset_tool.pack_dataset('phantom:5', str(tmp_path / dest), size=(8, 8, 4))
    assert os.listdir(tmp_path) == []


def test_sigterm_removes_the_temporary_archive(tmp_path):
    # A scheduler stops jobs with SIGTERM; the run must clean up as it does on Ctrl-C.
    tool = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'dataset_tool.py')
    process = subprocess.Popen([sys.executable, tool, '--source', 'phantom:100000', '--size', '32x32x8',
                                '--dest', str(tmp_path / 'out.zip')], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not glob.glob(str(tmp_path / '.*.tmp.out.zip')) and process.poll() is None:
            assert time.monotonic() < deadline, 'no temporary archive appeared'
            time.sleep(0.05)
        time.sleep(0.2)  # Some volumes written.
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    assert os.listdir(tmp_path) == []


def test_existing_destination_needs_overwrite(tmp_path):
    assert pack('--source', 'phantom:2', '--dest', tmp_path / 'out.zip', '--size', '8x8x4').exit_code == 0
    before = (tmp_path / 'out.zip').read_bytes()
    again = pack('--source', 'phantom:3', '--dest', tmp_path / 'out.zip', '--size', '8x8x4')
    assert again.exit_code == 1 and again.output.strip() == \
        f'Error: --dest {tmp_path / "out.zip"} exists; pass --overwrite to replace it'
    assert (tmp_path / 'out.zip').read_bytes() == before
    replaced = pack('--source', 'phantom:3', '--dest', tmp_path / 'out.zip', '--size', '8x8x4', '--overwrite')
    assert replaced.exit_code == 0 and len(read_zip(tmp_path / 'out.zip')[1]) == 3
    assert pack('--source', 'phantom:2', '--dest', tmp_path / 'dir', '--size', '8x8x4').exit_code == 0
    assert pack('--source', 'phantom:3', '--dest', tmp_path / 'dir', '--size', '8x8x4').exit_code == 1
    assert pack('--source', 'phantom:3', '--dest', tmp_path / 'dir', '--size', '8x8x4', '--overwrite').exit_code == 0
    assert len(VolumeFolderDataset(str(tmp_path / 'dir'))) == 3 and leftovers(tmp_path) == ['out.zip']


def test_spacing_that_fov_and_size_would_override_is_refused(tmp_path):
    result = pack('--source', 'phantom:1', '--dest', tmp_path / 'out.zip', '--size', '16x16x8',
                  '--fov', '64,64,32', '--spacing', '1,1,4')
    assert result.exit_code == 2 and '--spacing' in result.output and 'fov / --size = 4,4,4' in result.output
    agreed = pack('--source', 'phantom:1', '--dest', tmp_path / 'out.zip', '--size', '16x16x8',
                  '--fov', '64,64,32', '--spacing', '4')
    assert agreed.exit_code == 0, agreed.output

#----------------------------------------------------------------------------
# The walkthrough's commands, run as written on a folder laid out as it shows.

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def walkthrough_commands(tool):
    """The `python TOOL ...` commands of docs/walkthrough.md, continuation lines joined, as argument lists."""
    import shlex
    text = open(os.path.join(REPO, 'docs', 'walkthrough.md')).read().replace('\\\n', ' ')
    return [shlex.split(line)[2:] for line in text.splitlines() if line.startswith(f'python {tool} ')]


def write_prostate_like_cases(root, cases):
    """case/case_{t2w,adc,hbv,seg}.nii.gz: 64x64x12 voxels of 2 x 2 x 6 mm (a 128 x 128 x 72 mm box) with two zones."""
    zz, yy, xx = np.meshgrid(np.arange(12), np.arange(64), np.arange(64), indexing='ij')  # [D, H, W]
    r2 = ((xx - 30) / 12) ** 2 + ((yy - 34) / 10) ** 2 + ((zz - 6) / 3) ** 2
    seg = np.where(r2 < 0.4, 1, np.where(r2 < 1, 2, 0)).astype(np.uint8)
    zones = seg.astype(np.float32)
    for i, case in enumerate(cases):
        os.makedirs(root / case)
        for name, volume in [('t2w', 100 + 300 * (seg == 1) + 150 * (seg == 2) + i), ('adc', 900 - 200 * zones),
                             ('hbv', 10 + 5 * zones), ('seg', seg)]:
            image = sitk.GetImageFromArray(volume.astype(np.uint8 if name == 'seg' else np.float32))
            image.SetSpacing((2.0, 2.0, 6.0))
            sitk.WriteImage(image, str(root / case / f'{case}_{name}.nii.gz'))
    return seg


@pytest.mark.slow
def test_the_walkthrough_packing_commands_work_as_written(tmp_path):
    # A user found the labelled command failing: with one --channels pattern, --seg looked for case_0007_t2w_seg.
    source = tmp_path / 'prostate'
    seg = write_prostate_like_cases(source, ['case_0001', 'case_0007'])
    (tmp_path / 'zones.json').write_text('{"1": "CZ+TZ", "2": "PZ"}')  # The walkthrough's echo line.
    commands = walkthrough_commands('dataset_tool.py')
    assert len(commands) == 3 and all('--source=~/data/prostate' in args for args in commands)
    for args in commands:
        args = [a.replace('~/data/prostate', str(source)) for a in args]
        result = subprocess.run([sys.executable, os.path.join(REPO, 'dataset_tool.py'), *args], cwd=tmp_path,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and result.stderr == '', (args, result.stdout, result.stderr)
        assert 'Wrote 2 volumes' in result.stdout and 'skipped 0.' in result.stdout, result.stdout
    info, arrays = read_zip(tmp_path / 'prostate_zones.zip')
    assert info['shape'] == [1, 24, 256, 256] and info['volume_info']['channels'] == ['t2w']
    assert info['volume_info']['label_names'] == {'1': 'CZ+TZ', '2': 'PZ'}
    assert info['sources'] == [['00000/vol00000000.npy', 'case_0001'], ['00000/vol00000001.npy', 'case_0007']]
    # Each case got its own case_NNNN_seg.nii.gz: each zone keeps its volume, at 4 x 4 x 2 voxels per source voxel.
    for i in range(2):
        packed = arrays[f'00000/seg0000000{i}.npy']
        assert set(np.unique(packed)) == {0, 1, 2}
        for value in (1, 2):
            assert (packed == value).sum() == pytest.approx((seg == value).sum() * 16 * 2, rel=0.1)
    assert read_zip(tmp_path / 'prostate_bpmri.zip')[0]['shape'] == [3, 24, 256, 256]

#----------------------------------------------------------------------------
# Sizes train.py cannot train: packed, with one warning line before and in the summary.

WARNING_30 = ('train.py will refuse 30x30x10 volumes: each axis must be b x 2^k with b in 4..7 (or 3, if not the '
              'largest; training/volume_shape.py), and x=30 and y=30 are not. Nearest trainable sizes: 28x28x10 or '
              '32x32x10 (or give train.py an explicit --base)')


@pytest.mark.slow
def test_a_size_train_py_refuses_is_packed_with_a_warning_that_names_the_nearest_sizes(tmp_path):
    result = run_cli(['dataset_tool.py', '--source=phantom:2', '--size=30x30x10', f'--dest={tmp_path / "p.zip"}'])
    assert result.returncode == 0 and result.stderr == '', result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f'Warning: {WARNING_30}. Packing anyway: a packed set can still serve radiomics or audits.'
    assert lines[1].startswith('Wrote 2 volumes of 30x30x10 with 1 channel(s)')
    assert lines[2:] == [f'  warning: {WARNING_30}']
    # The warning is true: train.py refuses the packed set, and trains the sizes it names.
    from training.volume_shape import make_schedule
    for size in ((10, 28, 28), (10, 32, 32)):
        assert make_schedule(size).img_shape == size
    refused = run_cli(['train.py', f'--outdir={tmp_path / "runs"}', f'--data={tmp_path / "p.zip"}', '--dry-run',
                       '--workers=0'])
    assert_clean_failure(refused, 'volume size 30x30x10 does not factor')
    # A size it trains gives no warning; without --size the packed size is checked afterwards, in the summary.
    fine = run_cli(['dataset_tool.py', '--source=phantom:1', '--size=32x32x10', f'--dest={tmp_path / "q.zip"}'])
    assert fine.returncode == 0 and 'arning' not in fine.stdout + fine.stderr, fine.stdout
    write_npy_cases(tmp_path / 'src', ['a', 'b'], shape=(4, 6, 9))  # 9x6x4.
    unsized = run_cli(['dataset_tool.py', f'--source={tmp_path / "src"}', f'--dest={tmp_path / "r.zip"}'])
    assert unsized.returncode == 0 and unsized.stdout.splitlines()[0].startswith('Wrote 2 volumes'), unsized.stdout
    assert unsized.stdout.splitlines()[1].startswith('  warning: train.py will refuse 9x6x4 volumes: ')
    assert 'and x=9 is not. Nearest trainable sizes: 8x6x4 or 10x6x4 ' in unsized.stdout

#----------------------------------------------------------------------------
# One file as the source.


def test_one_volume_file_is_a_one_volume_source_with_its_label_map(tmp_path):
    seg = write_prostate_like_cases(tmp_path, ['case_0007'])
    t2w = tmp_path / 'case_0007' / 'case_0007_t2w.nii.gz'
    # Without --channels, '*' in --seg is the file's name without its extension.
    (tmp_path / 'case_0007' / 'case_0007_t2w_seg.nii.gz').symlink_to(tmp_path / 'case_0007' / 'case_0007_seg.nii.gz')
    result = run_cli(['dataset_tool.py', f'--source={t2w}', f'--dest={tmp_path / "one.zip"}', '--seg=*_seg.nii.gz',
                      '--clip=0,100'])
    assert result.returncode == 0 and result.stderr == '', result.stderr
    assert result.stdout.startswith(f'Wrote 1 volume of 64x64x12 with 1 channel(s) to {tmp_path / "one.zip"}')
    info, arrays = read_zip(tmp_path / 'one.zip')
    assert info['sources'] == [['00000/vol00000000.npy', 'case_0007_t2w.nii.gz']]
    assert np.array_equal(arrays['00000/seg00000000.npy'], seg)  # Its label map, found beside it.
    expected = sitk.GetArrayFromImage(sitk.ReadImage(str(t2w)))
    expected = np.rint((expected - expected.min()) * 255 / np.ptp(expected))
    assert np.array_equal(arrays['00000/vol00000000.npy'][0], expected)


def test_one_dicom_file_stands_for_its_series(tmp_path):
    volume = np.arange(5 * 8 * 8, dtype=np.int16).reshape(5, 8, 8)
    write_dicom_series(tmp_path / 'mr', volume, (1.0, 1.0, 2.0), uid='1.2.3.1')
    write_dicom_series(tmp_path / 'mr', volume[::-1], (1.0, 1.0, 2.0), uid='1.2.3.2', origin=(0, 0, 50),
                       extension='')  # Another series in the same folder: slice000, slice001, ...
    for name, uid, series in [('slice002.dcm', '1.2.3.1', volume), ('slice004', '1.2.3.2', volume[::-1])]:
        dest = tmp_path / f'{uid}.zip'
        result = run_cli(['dataset_tool.py', f'--source={tmp_path / "mr" / name}', f'--dest={dest}', '--clip=0,100'])
        assert result.returncode == 0 and result.stderr == '', result.stderr
        info, arrays = read_zip(dest)
        assert info['shape'] == [1, 5, 8, 8] and len(arrays) == 1  # The five slices of its own series only.
        assert info['sources'] == [['00000/vol00000000.npy', f'mr#{uid}']]
        assert np.array_equal(arrays['00000/vol00000000.npy'][0], np.rint(series * 255.0 / volume.max()))


def test_one_file_source_errors_are_one_line(tmp_path):
    write_npy_cases(tmp_path, ['a'])
    (tmp_path / 'notes.txt').write_text('not a volume')
    make_bad(tmp_path / 'bad', 'truncated')
    for args, fragments in [
        ([f'--source={tmp_path / "notes.txt"}'], [str(tmp_path / 'notes.txt'), 'neither a folder, a .zip archive nor '
                                                  'a volume file']),
        ([f'--source={tmp_path / "a.npy"}', '--channels=*_t2w.nii.gz'], ['--channels groups the files of a folder',
                                                                         'a.npy is one file']),
        ([f'--source={tmp_path / "bad" / "bad.nii.gz"}'], ['1 of 1 inputs could not be packed: bad.nii.gz']),
    ]:
        result = run_cli(['dataset_tool.py', *args, f'--dest={tmp_path / "out.zip"}'])
        assert_clean_failure(result, *fragments)
        assert not os.path.exists(tmp_path / 'out.zip')
    # The reason names the file itself (not the folder joined to the file again).
    assert f'  failed bad.nii.gz: {tmp_path / "bad" / "bad.nii.gz"} is truncated' in result.stdout, result.stdout
