# SPDX-License-Identifier: Apache-2.0
"""generate.py on tiny untrained generators: geometry, intensities, formats, quality control and bad input."""

import json
import os

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import SimpleITK as sitk
import torch

import generate
import legacy
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.networks import (CENTRE, ROTATED, SHAPE, SPACING, different_volumes, expected_ras_affine,
                                    same_volume, stored_uint, tiny_generator, write_snapshot)
from training import generation
from volumes import volume_io
from volumes.contract import LPS_DIRECTION, IntensityMapping, VolumeInfo

#----------------------------------------------------------------------------
# Geometry, intensities, formats, previews.


def test_nifti_carries_dataset_spacing_and_orientation(network, tmp_path):
    result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '1-2,5', '--outdir', tmp_path,
                                    '--preview'])
    assert result.exit_code == 0, result.output
    assert 'Wrote 3 volumes' in result.output
    assert sorted(os.listdir(tmp_path)) == ['seed0001.nii.gz', 'seed0001.png', 'seed0002.nii.gz', 'seed0002.png',
                                           'seed0005.nii.gz', 'seed0005.png']
    image = nib.load(tmp_path / 'seed0001.nii.gz')
    assert image.shape == (16, 12, 8)  # NIfTI is (x, y, z) = (W, H, D).
    # dataset.json's direction is LPS; NIfTI's affine is RAS: x and y change sign, nothing else.
    assert np.allclose(image.affine, expected_ras_affine(ROTATED), atol=1e-5), image.affine
    assert np.allclose(nib.affines.voxel_sizes(image.affine), SPACING, atol=1e-6)
    assert image.get_data_dtype() == np.uint8
    assert same_volume(np.asanyarray(image.dataobj), stored_uint(network['G'], 1, 'uint8').transpose(2, 1, 0))
    # Middle axial [H, W], coronal [D, W] and sagittal [D, H] slices side by side, in square 0.5 mm pixels: the
    # 12 rows of 0.75 mm become 18, the 8 slices of 3 mm become 48; then all are enlarged 15 times, so that the
    # smallest plane (axial, 18 x 16) is at least 256 pixels on its long side.
    assert PIL.Image.open(tmp_path / 'seed0001.png').size == ((16 + 16 + 18) * 15, 48 * 15)


def test_canonical_uint16_dataset_gives_lps_uint16_volumes(network, tmp_path):
    assert invoke(generate.main, ['--network', network['pkl16'], '--seeds', '3', '--outdir', tmp_path]).exit_code == 0
    image = nib.load(tmp_path / 'seed0003.nii.gz')
    assert nib.aff2axcodes(image.affine) == ('L', 'P', 'S')  # The canonical orientation dataset_tool packs.
    assert np.allclose(image.affine, expected_ras_affine(LPS_DIRECTION, centre=(0, 0, 0)), atol=1e-5)
    assert image.get_data_dtype() == np.uint16
    data = np.asanyarray(image.dataobj)
    assert same_volume(data, stored_uint(network['G'], 3, 'uint16').transpose(2, 1, 0))
    assert data.max() > 255  # Really mapped to the 16-bit range, not left at 8 bits.


def test_nrrd_and_npy_formats(network, tmp_path):
    for fmt in ('nrrd', 'npy', 'nii'):
        result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '4', '--format', fmt,
                                        '--outdir', tmp_path / fmt])
        assert result.exit_code == 0, result.output
    image = sitk.ReadImage(str(tmp_path / 'nrrd' / 'seed0004.nrrd'))  # ITK reads NRRD in LPS, as dataset.json.
    assert np.allclose(image.GetDirection(), ROTATED) and np.allclose(image.GetSpacing(), SPACING)
    npy = np.load(tmp_path / 'npy' / 'seed0004.npy')
    assert npy.dtype == np.uint8 and npy.shape == SHAPE
    assert same_volume(sitk.GetArrayFromImage(image), npy)
    assert same_volume(np.asanyarray(nib.load(tmp_path / 'nii' / 'seed0004.nii').dataobj), npy.transpose(2, 1, 0))


def test_count_writes_seeds_from_zero(network, tmp_path):
    assert invoke(generate.main, ['--network', network['pkl'], '--count', 3, '--format', 'npy', '--batch', 2,
                                  '--outdir', tmp_path]).exit_code == 0
    assert sorted(os.listdir(tmp_path)) == ['seed0000.npy', 'seed0001.npy', 'seed0002.npy']
    assert same_volume(np.load(tmp_path / 'seed0002.npy'), stored_uint(network['G'], 2, 'uint8'))


@pytest.mark.parametrize('noise_mode', ['const', 'random'])
def test_same_seed_same_volume_whatever_the_batch(network, tmp_path, noise_mode):
    for sub, batch, seeds in (('a', 1, '7'), ('b', 4, '5-8')):
        result = invoke(generate.main, ['--network', network['noisy'], '--seeds', seeds, '--batch', batch,
                                        '--noise-mode', noise_mode, '--format', 'npy', '--outdir', tmp_path / sub])
        assert result.exit_code == 0, result.output
    a, b = np.load(tmp_path / 'a' / 'seed0007.npy'), np.load(tmp_path / 'b' / 'seed0007.npy')
    assert a.shape == SHAPE and same_volume(a, b)
    assert different_volumes(a, np.load(tmp_path / 'b' / 'seed0008.npy'))


def test_random_noise_differs_from_const(network, tmp_path):
    for mode in ('const', 'random'):
        assert invoke(generate.main, ['--network', network['noisy'], '--seeds', '7', '--noise-mode', mode,
                                      '--format', 'npy', '--outdir', tmp_path / mode]).exit_code == 0
    const, random = np.load(tmp_path / 'const' / 'seed0007.npy'), np.load(tmp_path / 'random' / 'seed0007.npy')
    assert np.abs(const.astype(int) - random.astype(int)).mean() > 1


def test_truncation_pulls_towards_the_average(network, tmp_path):
    for psi in (1, 0):
        assert invoke(generate.main, ['--network', network['pkl'], '--seeds', '1,2', '--trunc', psi,
                                      '--format', 'npy', '--outdir', tmp_path / str(psi)]).exit_code == 0
    load = lambda psi, seed: np.load(tmp_path / str(psi) / f'seed{seed:04d}.npy')  # noqa: E731
    assert different_volumes(load(1, 1), load(1, 2))
    assert same_volume(load(0, 1), load(0, 2))  # psi = 0: every seed gives the average w.


def test_conditional_network_needs_a_class(network, tmp_path):
    assert_one_line_error(invoke(generate.main, ['--network', network['cond'], '--seeds', '1', '--outdir', tmp_path]),
                          '--class', 'conditional (3 classes)')
    assert_one_line_error(invoke(generate.main, ['--network', network['cond'], '--seeds', '1', '--class', 3,
                                                 '--outdir', tmp_path]), '--class', '3 is not in [0, 3)')
    assert not os.listdir(tmp_path)
    for cls in (0, 2):
        assert invoke(generate.main, ['--network', network['cond'], '--seeds', '1', '--class', cls, '--format', 'npy',
                                      '--outdir', tmp_path / str(cls)]).exit_code == 0
    assert different_volumes(np.load(tmp_path / '0' / 'seed0001.npy'), np.load(tmp_path / '2' / 'seed0001.npy'))

#----------------------------------------------------------------------------
# Quality control.


def test_qc_filter_keeps_volumes_like_the_real_ones(network, tmp_path):
    real = tmp_path / 'real'
    real.mkdir()
    (real / 'dataset.json').write_text(json.dumps(dict(format='stylegan2-ada-3d/1', dtype='uint8')))
    np.save(real / 'vol0.npy', stored_uint(network['G'], 1, 'uint8')[None])  # [C, D, H, W]
    result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '0-3', '--qc-data', real,
                                    '--qc-ssim', 0.99, '--outdir', tmp_path / 'out'])
    assert result.exit_code == 0, result.output
    assert os.listdir(tmp_path / 'out') == ['seed0001.nii.gz']
    assert 'Wrote 1 volumes' in result.output and 'dropped 3' in result.output
    result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '0-3', '--qc-data', real,
                                    '--qc-ssim', -1, '--outdir', tmp_path / 'all'])
    assert len(os.listdir(tmp_path / 'all')) == 4 and 'dropped 0' in result.output


def test_qc_data_of_another_shape_is_a_clear_error(network, tmp_path):
    real = tmp_path / 'real'
    real.mkdir()
    (real / 'dataset.json').write_text(json.dumps(dict(format='stylegan2-ada-3d/1', dtype='uint8')))
    np.save(real / 'vol0.npy', np.zeros([1, 4, 4, 4], np.uint8))
    assert_one_line_error(invoke(generate.main, ['--network', network['pkl'], '--seeds', '0', '--qc-data', real,
                                                 '--qc-ssim', 0.5, '--outdir', tmp_path / 'out']),
                          '--qc-data', 'size 4x4x4', 'the network makes 16x12x8')
    assert not os.path.exists(tmp_path / 'out')

#----------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize('args, fragments', [
    (['--seeds', '1-x'], ['--seeds', '"1-x" is not a seed']),
    (['--seeds', ''], ['--seeds', '"" is not a seed']),
    (['--seeds', '1,,2'], ['--seeds', '"" is not a seed']),
    (['--seeds', 'a,b'], ['--seeds', '"a" is not a seed']),
    (['--seeds', '-1'], ['--seeds', '"-1" is not a seed']),
    (['--seeds', '3-1'], ['--seeds', 'runs backwards']),
    (['--seeds', '4294967296'], ['--seeds', 'seeds go up to 4294967295']),
    (['--seeds', '0-99999999999'], ['--seeds']),
    (['--seeds', '1', '--class', '2'], ['--class', 'unconditional']),
    (['--seeds', '1', '--count', '3'], ['exactly one of --seeds and --count']),
    ([], ['exactly one of --seeds and --count']),
    (['--seeds', '1', '--format', 'png'], ['--format', "'png' is not one of"]),
    (['--seeds', '1', '--qc-ssim', '0.5'], ['--qc-ssim', '--qc-data and --qc-ssim go together']),
    (['--seeds', '1', '--qc-data', 'somewhere'], ['--qc-data and --qc-ssim go together']),
    (['--seeds', '1', '--qc-data', 'nowhere.zip', '--qc-ssim', '0.5'], ['--qc-data', 'nowhere.zip does not exist']),
    (['--seeds', '1', '--projected-w', 'p.npz'], ['--projected-w', 'leave --seeds and --count out']),
    (['--projected-w', 'missing.npz'], ['--projected-w', 'missing.npz']),
])
def test_bad_input_one_line_errors(network, tmp_path, args, fragments):
    outdir = tmp_path / 'out'
    assert_one_line_error(invoke(generate.main, ['--network', network['pkl'], '--outdir', outdir, *args]), *fragments)
    assert not os.path.exists(outdir)  # Checked before anything is written.


def test_failed_write_leaves_no_partial_file(network, tmp_path, monkeypatch):
    real_write = sitk.WriteImage
    calls = []

    def write_then_fail(image, path, *args, **kwargs):  # The second volume dies half-way through its file.
        calls.append(path)
        if len(calls) == 2:
            with open(path, 'wb') as f:
                f.write(b'\x5c\x01\x00\x00 half a header')
            raise RuntimeError('ITK ERROR: disk full')
        return real_write(image, path, *args, **kwargs)
    monkeypatch.setattr(volume_io.sitk, 'WriteImage', write_then_fail)
    result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '1-3', '--outdir', tmp_path])
    assert_one_line_error(result, 'cannot write', 'seed0002.nii.gz', 'disk full')
    assert os.listdir(tmp_path) == ['seed0001.nii.gz']  # The finished volume stays; no partial second one.
    assert nib.load(tmp_path / 'seed0001.nii.gz').shape == (16, 12, 8)


def test_failed_preview_leaves_no_partial_png(network, tmp_path, monkeypatch):
    def save_then_fail(self, fp, *args, **kwargs):
        fp.write(b'\x89PNG half')
        raise OSError(28, 'No space left on device')
    monkeypatch.setattr(PIL.Image.Image, 'save', save_then_fail)
    result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '1', '--preview', '--outdir', tmp_path])
    assert_one_line_error(result, 'cannot write', 'seed0001.png', 'No space left on device')
    assert os.listdir(tmp_path) == ['seed0001.nii.gz']


def test_outdir_that_is_a_file_is_a_clear_error(network, tmp_path):
    (tmp_path / 'taken').write_text('x')
    assert_one_line_error(invoke(generate.main, ['--network', network['pkl'], '--seeds', '1',
                                                 '--outdir', tmp_path / 'taken']), 'is a file; expected a folder')


def test_projected_w_of_another_network_is_a_clear_error(network, tmp_path):
    np.savez(tmp_path / 'bad.npz', w=np.zeros([1, 3, 8], np.float32))
    assert_one_line_error(invoke(generate.main, ['--network', network['pkl'], '--projected-w', tmp_path / 'bad.npz',
                                                 '--outdir', tmp_path / 'o']), '--projected-w', 'shape (1, 3, 8)')
    assert not os.path.exists(tmp_path / 'o')

#----------------------------------------------------------------------------
# The record inside the network: geometry, units, and networks of the previous layout.


def test_geometry_comes_from_the_network_not_the_dataset(network, tmp_path):
    # The snapshot's dataset does not exist: the record inside G places the volume and gives its stored dtype.
    assert invoke(legacy.cli, ['export', '--network', network['pkl16'], '--dest', tmp_path / 'G.pt']).exit_code == 0
    for net in (network['pkl'], network['pkl16'], tmp_path / 'G.pt'):
        result = invoke(generate.main, ['--network', net, '--seeds', '1', '--outdir', tmp_path / 'out', '--overwrite'])
        assert result.exit_code == 0 and 'Note' not in result.output, result.output
    image = nib.load(tmp_path / 'out' / 'seed0001.nii.gz')  # The export's, made from pkl16.
    assert np.allclose(image.affine, expected_ras_affine(LPS_DIRECTION, centre=(0, 0, 0)), atol=1e-5)
    assert image.get_data_dtype() == np.uint16


def test_a_generated_volume_lies_over_the_training_volumes_centre(network, tmp_path):
    assert invoke(generate.main, ['--network', network['pkl'], '--seeds', '2', '--outdir', tmp_path]).exit_code == 0
    image = nib.load(tmp_path / 'seed0002.nii.gz')
    centre_voxel = (np.asarray(image.shape) - 1) / 2
    centre_ras = image.affine[:3, :3] @ centre_voxel + image.affine[:3, 3]
    assert np.allclose(centre_ras * [-1, -1, 1], CENTRE, atol=1e-4)  # RAS -> LPS.


def test_networks_of_the_previous_layout_still_load_and_say_what_they_assume(tmp_path):
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'legacy')
    expected = np.load(os.path.join(data, 'expected-v1-seed0.npy'))
    for name in ('snapshot-v1.pkl', 'export-v1.pt'):
        loaded = legacy.load_network(os.path.join(data, name))
        G = loaded['G_ema']
        with torch.no_grad():
            out = G(generation.seed_latents([0], G.z_dim), torch.zeros([1, 0]), noise_mode='const')
        assert np.allclose(out.numpy(), expected, atol=1e-6), name
        result = invoke(generate.main, ['--network', os.path.join(data, name), '--seeds', '0', '--outdir',
                                        tmp_path / name])
        assert result.exit_code == 0, result.output
        image = nib.load(tmp_path / name / 'seed0000.nii.gz')
        assert np.allclose(nib.affines.voxel_sizes(image.affine), SPACING)
        notes = [line for line in result.output.splitlines() if line.startswith('Note:')]
        assert len(notes) == 1 and 'assuming 0.5x0.75x3 mm' in notes[0]
        if name == 'export-v1.pt':  # The old export knew the direction and the dtype, not the centre.
            assert image.get_data_dtype() == np.uint16 and 'the centre is unknown' in notes[0]
            assert np.allclose(image.affine, expected_ras_affine(ROTATED, centre=(0, 0, 0)), atol=1e-5)
        else:
            assert image.get_data_dtype() == np.uint8 and 'written before networks carried' in notes[0]


def test_a_windowed_network_writes_hounsfield_units(tmp_path):
    G = tiny_generator()
    ct = VolumeInfo(spacing=SPACING, intensity=IntensityMapping('window', -1000, 1000, 'uint16'))
    G.volume_info = ct  # As a network trained on data packed with --window=-1000,1000 --dtype=uint16 carries it.
    path = write_snapshot(tmp_path / 'ct.pkl', G, tmp_path / 'gone.zip')
    result = invoke(generate.main, ['--network', path, '--seeds', '3', '--outdir', tmp_path / 'hu'])
    assert result.exit_code == 0 and 'source units (-1000..1000, int16)' in result.output, result.output
    image = nib.load(tmp_path / 'hu' / 'seed0003.nii.gz')
    assert image.get_data_dtype() == np.int16
    expected = np.rint(ct.intensity.to_source(stored_uint(G, 3, 'uint16'))).astype(np.int16)  # [D, H, W]
    assert np.array_equal(np.asanyarray(image.dataobj), expected.transpose(2, 1, 0))
    assert invoke(generate.main, ['--network', path, '--seeds', '3', '--units', 'stored', '--outdir',
                                  tmp_path / 'st']).exit_code == 0
    assert nib.load(tmp_path / 'st' / 'seed0003.nii.gz').get_data_dtype() == np.uint16
    mr = write_snapshot(tmp_path / 'mr.pkl', tiny_generator(), tmp_path / 'gone.zip')  # Percentile-clipped.
    result = invoke(generate.main, ['--network', mr, '--seeds', '1', '--units', 'source', '--outdir', tmp_path / 'mr'])
    assert_one_line_error(result, '--units', 'per-volume percentiles')
    assert not os.path.exists(tmp_path / 'mr')
