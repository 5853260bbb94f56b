# SPDX-License-Identifier: Apache-2.0
"""generate.py, style_mixing.py, projector.py and the safe export on tiny untrained generators."""

import json
import os
import pickle

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import SimpleITK as sitk
import torch
from click.testing import CliRunner

import dataset_tool
import generate
import legacy
import projector
import style_mixing
from training import generation, projection
from volumes import volume_io
from training.networks import Generator
from volumes.contract import IntensityMapping, VolumeInfo, from_unit

SPACING = (0.5, 0.75, 3.0)                                 # (x, y, z) mm
SHAPE = (8, 12, 16)                                        # (D, H, W): all different, so axis mix-ups show
ROTATED = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # An in-plane rotated LPS direction (row-major).
CENTRE = (12.5, -40.0, 7.25)                               # Where the training volumes sat (LPS, mm).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def tiny_generator(c_dim: int = 0, noise_strength: float = 0.0, direction=ROTATED, dtype: str = 'uint8',
                   centre=CENTRE, percentiles=(0.5, 99.5)) -> Generator:
    torch.manual_seed(0)
    info = VolumeInfo(spacing=SPACING, direction=direction, centre=centre,
                      intensity=IntensityMapping('percentile', *percentiles, dtype))
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_shape=SHAPE, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16),
                  volume_info=info.to_dict()).eval()
    with torch.no_grad():  # Untrained layers have zero noise strength; some tests need the noise to matter.
        for module in G.modules():
            if hasattr(module, 'noise_strength'):
                module.noise_strength.fill_(noise_strength)
    return G


def write_snapshot(path, G, data_path) -> str:
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None,
                         training_set_kwargs=dict(class_name='training.dataset.VolumeFolderDataset',
                                                  path=str(data_path))), f)
    return str(path)


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    """Snapshot pickles of tiny generators for 16x12x8 (x, y, z) volumes; their training data is not there."""
    root = tmp_path_factory.mktemp('net')
    gone = root / 'moved-away.zip'
    G = tiny_generator()
    return dict(
        G=G,
        pkl=write_snapshot(root / 'network-snapshot-000000.pkl', G, gone),
        pkl16=write_snapshot(root / 'uint16.pkl', tiny_generator(direction=volume_io.CANONICAL_DIRECTION,
                                                                 dtype='uint16', centre=(0, 0, 0)), gone),
        noisy=write_snapshot(root / 'noisy.pkl', tiny_generator(noise_strength=0.3), gone),
        cond=write_snapshot(root / 'cond.pkl', tiny_generator(c_dim=3), gone))


# On the CPU the CLIs and the checks here compute identically, so volumes must match exactly. On a GPU (TF32,
# other kernels per batch size) the same volume may round to a neighbouring stored value, so allow 1% of the range.
TOLERANCE = 0.01 if torch.cuda.is_available() else 0.0


def same_volume(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape and dtype, and voxels equal up to TOLERANCE of the dtype's range."""
    tol = TOLERANCE * np.iinfo(a.dtype).max
    return a.shape == b.shape and a.dtype == b.dtype and np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= tol


def different_volumes(a: np.ndarray, b: np.ndarray) -> bool:
    """Voxels differ by more than 1% of the range on average: clearly not the same volume."""
    return np.abs(a.astype(np.int64) - b.astype(np.int64)).mean() > 0.01 * np.iinfo(a.dtype).max


def invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def assert_one_line_error(result, *fragments) -> None:
    """A clean CLI failure: no traceback, one 'Error:' line (the last) holding every fragment."""
    assert result.exit_code in (1, 2), result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.output.rstrip().splitlines()
    errors = [line for line in lines if line.startswith('Error:')]
    assert len(errors) == 1 and errors[0] == lines[-1], result.output
    assert all(f in errors[0] for f in fragments), result.output


def expected_ras_affine(direction, spacing=SPACING, shape_dhw=SHAPE, centre=CENTRE) -> np.ndarray:
    """The NIfTI (RAS) affine of a volume written in LPS with the given direction, its centre at `centre`."""
    lps = np.eye(4)
    lps[:3, :3] = np.reshape(direction, (3, 3)) @ np.diag(spacing)
    centre_voxel = (np.asarray(shape_dhw[::-1]) - 1) / 2  # (x, y, z)
    lps[:3, 3] = np.asarray(centre) - lps[:3, :3] @ centre_voxel
    return LPS_TO_RAS @ lps


def stored_uint(G, seed: int, dtype: str, noise_mode: str = 'const') -> np.ndarray:
    """The [D, H, W] volume of one seed, computed here from G, in the stored range."""
    with torch.no_grad():
        volume = G(generation.seed_latents([seed], G.z_dim), torch.zeros([1, G.c_dim]), noise_mode=noise_mode)
    max_value = np.iinfo(dtype).max
    return np.rint((volume[0, 0].numpy() + 1) * max_value / 2).clip(0, max_value).astype(dtype)

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
    assert np.allclose(image.affine, expected_ras_affine(volume_io.CANONICAL_DIRECTION, centre=(0, 0, 0)), atol=1e-5)
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


def bad_network_files(tmp_path) -> dict:
    """Files that are not networks, each of which every CLI must reject in one line."""
    (tmp_path / 'notes.txt').write_text('not a network\n')
    (tmp_path / 'empty.pkl').write_bytes(b'')
    torch.save(torch.zeros(3), tmp_path / 'tensor.pt')
    torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pt')  # A pickled module: weights_only refuses it.
    return {name: tmp_path / name for name in ('missing.pkl', 'notes.txt', 'empty.pkl', 'tensor.pt', 'module.pt')}


def test_bad_network_is_a_one_line_error_for_every_cli(network, tmp_path):
    np.save(tmp_path / 'target.npy', np.zeros(SHAPE, np.float32))
    clis = [(generate.main, ['--seeds', '1']), (style_mixing.main, ['--rows', '1', '--cols', '2']),
            (projector.main, ['--target', tmp_path / 'target.npy', '--num-steps', 1])]
    for name, path in bad_network_files(tmp_path).items():
        for command, args in clis:
            result = invoke(command, ['--network', path, '--outdir', tmp_path / 'out', *args])
            assert_one_line_error(result, '--network', name)
    assert not os.path.exists(tmp_path / 'out')


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

#----------------------------------------------------------------------------
# Safe export.


def test_safe_export_loads_without_code_and_gives_the_same_volumes(network, tmp_path):
    export = tmp_path / 'G.pt'
    result = invoke(legacy.cli, ['export', '--network', network['pkl'], '--dest', export])
    assert result.exit_code == 0, result.output
    payload = torch.load(export, weights_only=True)
    assert payload['format'] == legacy.EXPORT_FORMAT
    assert json.loads(payload['config'])['class_name'] == 'training.networks.Generator'
    outputs = {}
    for net in (network['pkl'], export):
        out = tmp_path / ('out-' + os.path.basename(str(net)))
        assert invoke(generate.main, ['--network', net, '--seeds', '3', '--outdir', out]).exit_code == 0
        assert invoke(style_mixing.main, ['--network', net, '--rows', '0', '--cols', '5', '--styles', '0-2',
                                          '--outdir', out / 'mix']).exit_code == 0
        outputs[net] = [nib.load(out / name) for name in ('seed0003.nii.gz', 'mix/0-5.nii.gz')]
    for a, b in zip(*outputs.values()):
        assert same_volume(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        assert np.allclose(a.affine, b.affine)


def test_geometry_comes_from_the_network_not_the_dataset(network, tmp_path):
    # The snapshot's dataset does not exist: the record inside G places the volume and gives its stored dtype.
    assert invoke(legacy.cli, ['export', '--network', network['pkl16'], '--dest', tmp_path / 'G.pt']).exit_code == 0
    for net in (network['pkl'], network['pkl16'], tmp_path / 'G.pt'):
        result = invoke(generate.main, ['--network', net, '--seeds', '1', '--outdir', tmp_path / 'out', '--overwrite'])
        assert result.exit_code == 0 and 'Note' not in result.output, result.output
    image = nib.load(tmp_path / 'out' / 'seed0001.nii.gz')  # The export's, made from pkl16.
    assert np.allclose(image.affine, expected_ras_affine(volume_io.CANONICAL_DIRECTION, centre=(0, 0, 0)), atol=1e-5)
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


def test_export_of_an_old_snapshot_records_a_datasets_record(tmp_path):
    data = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'legacy')
    subprocess_free = invoke(dataset_tool.main, ['--source', 'phantom:1', '--dest', tmp_path / 'p.zip',
                                                 '--size', '16x12x8'])
    assert subprocess_free.exit_code == 0, subprocess_free.output
    result = invoke(legacy.cli, ['export', '--network', os.path.join(data, 'snapshot-v1.pkl'), '--data',
                                 tmp_path / 'p.zip', '--dest', tmp_path / 'G.pt'])
    assert result.exit_code == 0, result.output
    G = legacy.load_network(str(tmp_path / 'G.pt'))['G_ema']
    assert G.volume_info.spacing == pytest.approx((4.0, 64 / 12, 9.0))  # The phantom's box over 16x12x8 voxels.

#----------------------------------------------------------------------------
# Style mixing.


def test_style_mixing_end_to_end(network, tmp_path):
    result = invoke(style_mixing.main, ['--network', network['pkl'], '--rows', '0-1', '--cols', '5-6',
                                        '--styles', '0-2', '--outdir', tmp_path])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path)) == ['0-5.nii.gz', '0-6.nii.gz', '1-5.nii.gz', '1-6.nii.gz', 'grid.png']
    # 1 + cols by 1 + rows tiles of 16 x 18 pixels (0.5 mm), each enlarged 15 times to reach 256 pixels.
    assert PIL.Image.open(tmp_path / 'grid.png').size == (3 * 16 * 15, 3 * 18 * 15)
    image = nib.load(tmp_path / '1-6.nii.gz')
    assert np.allclose(image.affine, expected_ras_affine(ROTATED), atol=1e-5)

    G, cpu = network['G'], torch.device('cpu')
    vols = generation.style_mix(G, [1], [6], [0, 1, 2], torch.zeros(1, 0), 1.0, 'const', cpu)
    assert same_volume(np.asanyarray(image.dataobj),
                          from_unit(vols[(1, 6)], 'uint8')[0].transpose(2, 1, 0))
    assert not np.allclose(vols[(1, 6)], vols[1]) and not np.allclose(vols[(1, 6)], vols[6])
    every_layer = generation.style_mix(G, [0], [5], list(range(G.num_ws)), torch.zeros(1, 0), 1.0, 'const', cpu)
    assert np.allclose(every_layer[(0, 5)], every_layer[5], atol=1e-6)  # All layers from the column seed: it.


@pytest.mark.parametrize('args, fragments', [
    (['--rows', '0', '--cols', '1', '--styles', '0-6'], ['--styles', 'layers 0-5']),
    (['--rows', '0', '--cols', '1', '--styles', 'coarse'], ['--styles', 'not a layer range']),
    (['--rows', '0,x', '--cols', '1'], ['--rows', '"x" is not a seed']),
    (['--rows', '0', '--cols', '1', '--class', '1'], ['--class', 'unconditional']),
])
def test_style_mixing_bad_input(network, tmp_path, args, fragments):
    assert_one_line_error(invoke(style_mixing.main, ['--network', network['pkl'], '--outdir', tmp_path / 'o', *args]),
                          *fragments)
    assert not os.path.exists(tmp_path / 'o')


def test_style_mixing_conditional_needs_a_class(network, tmp_path):
    assert_one_line_error(invoke(style_mixing.main, ['--network', network['cond'], '--rows', '0', '--cols', '1',
                                                     '--outdir', tmp_path / 'o']), '--class', 'conditional')
    assert invoke(style_mixing.main, ['--network', network['cond'], '--rows', '0', '--cols', '1', '--class', 1,
                                      '--outdir', tmp_path / 'o']).exit_code == 0

#----------------------------------------------------------------------------
# Projector.


@pytest.mark.slow
def test_projector_reduces_mse_tenfold(network):
    G = network['G']
    with torch.no_grad():
        target = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(4)), torch.zeros(1, 0),
                   noise_mode='const')[0]
    w, noises, losses = projection.project(G, target, num_steps=100, w_avg_samples=500)
    assert w.shape == (G.num_ws, G.w_dim) and set(noises) == set(generation.noise_buffers(G))
    # Judge the result, not the optimiser's own log: render the returned w and noise.
    G_proj = tiny_generator()
    G_proj.load_state_dict(G.state_dict())
    generation.set_noise_buffers(G_proj, noises)
    with torch.no_grad():
        final_mse = float((G_proj.synthesis(w[None], noise_mode='const')[0] - target).square().mean())
    assert final_mse * 10 <= losses[0], (losses[0], final_mse)


def test_projector_cli_and_projected_w_render_the_same_volume(network, tmp_path):
    G = tiny_generator(noise_strength=0.3)  # Noise that matters: the rendering needs the optimised noise too.
    with torch.no_grad():
        target = G(torch.randn(1, G.z_dim), torch.zeros(1, 0), noise_mode='const')[0, 0].numpy()
    np.save(tmp_path / 'target.npy', target)
    result = invoke(projector.main, ['--network', network['noisy'], '--target', tmp_path / 'target.npy',
                                     '--num-steps', 20, '--outdir', tmp_path / 'proj'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / 'proj')) == ['proj.nii.gz', 'proj.png', 'projected_w.npz']
    assert PIL.Image.open(tmp_path / 'proj' / 'proj.png').size == (2 * (16 + 16 + 18) * 15, 48 * 15)  # Before | after.
    proj = nib.load(tmp_path / 'proj' / 'proj.nii.gz')
    assert np.allclose(proj.affine, expected_ras_affine(ROTATED), atol=1e-5)

    npz = tmp_path / 'proj' / 'projected_w.npz'
    result = invoke(generate.main, ['--network', network['noisy'], '--projected-w', npz, '--outdir', tmp_path / 'r'])
    assert result.exit_code == 0 and os.listdir(tmp_path / 'r') == ['proj00.nii.gz'], result.output
    rendered = np.asanyarray(nib.load(tmp_path / 'r' / 'proj00.nii.gz').dataobj)
    assert same_volume(rendered, np.asanyarray(proj.dataobj))
    # Without the saved noise the rendering is a different volume: the noise in the file matters.
    with np.load(npz) as f:
        np.savez(tmp_path / 'w_only.npz', w=f['w'])
    assert invoke(generate.main, ['--network', network['noisy'], '--projected-w', tmp_path / 'w_only.npz',
                                  '--outdir', tmp_path / 'w']).exit_code == 0
    assert different_volumes(np.asanyarray(nib.load(tmp_path / 'w' / 'proj00.nii.gz').dataobj), rendered)


def test_projected_w_of_another_network_is_a_clear_error(network, tmp_path):
    np.savez(tmp_path / 'bad.npz', w=np.zeros([1, 3, 8], np.float32))
    assert_one_line_error(invoke(generate.main, ['--network', network['pkl'], '--projected-w', tmp_path / 'bad.npz',
                                                 '--outdir', tmp_path / 'o']), '--projected-w', 'shape (1, 3, 8)')
    assert not os.path.exists(tmp_path / 'o')


def test_projector_bad_input(network, tmp_path):
    (tmp_path / 'target.txt').write_text('x')
    assert_one_line_error(invoke(projector.main, ['--network', network['pkl'], '--target', tmp_path / 'target.txt',
                                                  '--outdir', tmp_path / 'o']), '--target', 'target.txt')
    np.save(tmp_path / 'target.npy', np.zeros(SHAPE, np.float32))
    assert_one_line_error(invoke(projector.main, ['--network', network['cond'], '--target', tmp_path / 'target.npy',
                                                  '--outdir', tmp_path / 'o']), '--class', 'conditional')
    assert not os.path.exists(tmp_path / 'o')


def test_projector_accepts_the_safe_export(network, tmp_path):
    assert invoke(legacy.cli, ['export', '--network', network['pkl'], '--dest', tmp_path / 'G.pt']).exit_code == 0
    np.save(tmp_path / 'target.npy', stored_uint(network['G'], 2, 'uint8').astype(np.float32))
    for name, net in (('pkl', network['pkl']), ('pt', tmp_path / 'G.pt')):
        assert invoke(projector.main, ['--network', net, '--target', tmp_path / 'target.npy', '--num-steps', 5,
                                       '--outdir', tmp_path / name]).exit_code == 0
    with np.load(tmp_path / 'pkl' / 'projected_w.npz') as a, np.load(tmp_path / 'pt' / 'projected_w.npz') as b:
        assert a.files == b.files and all(np.allclose(a[k], b[k], rtol=0, atol=TOLERANCE) for k in a.files)


def test_projector_target_is_read_in_the_training_orientation(network, tmp_path):
    # A NIfTI stored with x and y reversed (RAS-like axes) is read back in LPS, as dataset_tool packs volumes.
    array = np.random.RandomState(0).rand(*SHAPE).astype(np.float32) * 100  # [D, H, W]
    volume_io.write_volume(tmp_path / 't.nii.gz', array[:, ::-1, ::-1], SPACING, [-1, 0, 0, 0, -1, 0, 0, 0, 1])
    target = projection.load_target(str(tmp_path / 't.nii.gz'), tiny_generator(percentiles=(0, 100)))
    expected = (array - array.min()) / (array.max() - array.min()) * 2 - 1
    assert target.shape == (1, *SHAPE) and np.allclose(target[0].numpy(), expected, atol=1 / 255)  # uint8 steps


def test_projector_target_is_resampled_to_the_training_spacing(network, tmp_path):
    # The target has half the training spacing in x and covers twice the network's 8 mm in x; a block 4 mm wide
    # at its centre must cover 8 of the network's 16 voxels (0.5 mm) after physical resampling. A plain resize
    # of the array would give it 4.
    D, H, W = SHAPE
    fine_w = 4 * W  # 0.25 mm voxels over 16 mm.
    x_mm = (np.arange(fine_w) - (fine_w - 1) / 2) * SPACING[0] / 2
    array = np.zeros([D, H, fine_w], dtype=np.float32)
    array[..., np.abs(x_mm) < 2] = 100
    volume_io.write_volume(tmp_path / 't.nii.gz', array, (SPACING[0] / 2, *SPACING[1:]), volume_io.CANONICAL_DIRECTION)
    target = projection.load_target(str(tmp_path / 't.nii.gz'),
                                    tiny_generator(direction=volume_io.CANONICAL_DIRECTION, percentiles=(0, 100)))
    assert target.shape == (1, *SHAPE)
    profile = target[0, D // 2, H // 2].numpy()  # along W
    assert int((profile > 0).sum()) == 8 and profile[W // 2] == pytest.approx(1, abs=1e-3)


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
