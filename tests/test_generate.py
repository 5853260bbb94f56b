# SPDX-License-Identifier: Apache-2.0
"""generate.py, style_mixing.py, projector.py and the safe export on a tiny untrained generator."""

import json
import os
import pickle
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import generate
import legacy
import projector
import style_mixing
from training.networks import Generator

SPACING = (0.5, 0.75, 3.0)


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    """A snapshot pickle of a tiny generator for 16x16x8 volumes, with a dataset.json next to it."""
    root = tmp_path_factory.mktemp('net')
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_shape=(8, 16, 16), img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16),
                  voxel_spacing=SPACING).eval()
    direction = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # A rotated in-plane orientation.
    data_zip = root / 'data.zip'
    with zipfile.ZipFile(data_zip, 'w') as z:
        z.writestr('dataset.json', json.dumps(dict(spacing=list(SPACING), direction=direction, dtype='uint8')))
    path = root / 'network-snapshot-000000.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None,
                         training_set_kwargs=dict(class_name='training.dataset.VolumeFolderDataset',
                                                  path=str(data_zip))), f)
    return dict(pkl=str(path), G=G, direction=direction)


def invoke(command, args):
    return CliRunner().invoke(command, [str(a) for a in args])


def test_generate_writes_nifti_with_dataset_geometry(network, tmp_path):
    result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '1-2,5', '--outdir', tmp_path,
                                    '--preview'])
    assert result.exit_code == 0, result.output
    names = sorted(os.listdir(tmp_path))
    assert names == ['seed0001.nii.gz', 'seed0001.png', 'seed0002.nii.gz', 'seed0002.png', 'seed0005.nii.gz',
                     'seed0005.png']
    image = nib.load(tmp_path / 'seed0001.nii.gz')
    assert image.shape == (16, 16, 8)  # NIfTI is x, y, z.
    assert np.allclose(nib.affines.voxel_sizes(image.affine), SPACING, atol=1e-5)
    assert not np.allclose(image.affine[:3, :3], np.diag(SPACING))  # The rotated orientation is kept.
    assert image.get_data_dtype() == np.uint8


def test_same_seed_same_volume(network, tmp_path):
    for sub in ('a', 'b'):
        assert invoke(generate.main, ['--network', network['pkl'], '--seeds', '7', '--outdir', tmp_path / sub,
                                      '--format', 'npy', '--batch', '1' if sub == 'a' else '4']).exit_code == 0
    a, b = np.load(tmp_path / 'a' / 'seed0007.npy'), np.load(tmp_path / 'b' / 'seed0007.npy')
    assert a.shape == (8, 16, 16) and np.array_equal(a, b)


@pytest.mark.parametrize('args, message', [
    (['--seeds', '1-x'], '"1-x" is not a seed'),
    (['--seeds', '3-1'], 'runs backwards'),
    (['--seeds', '1', '--class', '2'], 'unconditional'),
    (['--seeds', '1', '--count', '3'], 'exactly one of --seeds and --count'),
])
def test_bad_input_one_line_errors(network, tmp_path, args, message):
    result = invoke(generate.main, ['--network', network['pkl'], '--outdir', tmp_path, *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_missing_network_is_a_clear_error(tmp_path):
    result = invoke(generate.main, ['--network', tmp_path / 'nope.pkl', '--seeds', '1', '--outdir', tmp_path])
    assert result.exit_code == 2 and 'nope.pkl' in result.output
    assert not os.listdir(tmp_path)


def test_safe_export_loads_without_code_and_matches_pickle(network, tmp_path):
    export = tmp_path / 'G.pt'
    result = invoke(legacy.cli, ['export', '--network', network['pkl'], '--dest', export])
    assert result.exit_code == 0, result.output
    payload = torch.load(export, weights_only=True)
    assert payload['format'] == legacy.EXPORT_FORMAT
    for net in (network['pkl'], export):
        assert invoke(generate.main, ['--network', net, '--seeds', '3', '--format', 'npy',
                                      '--outdir', tmp_path / ('out-' + os.path.basename(str(net)))]).exit_code == 0
    a = np.load(tmp_path / 'out-network-snapshot-000000.pkl' / 'seed0003.npy')
    b = np.load(tmp_path / 'out-G.pt' / 'seed0003.npy')
    assert np.array_equal(a, b)


def test_style_mixing_end_to_end(network, tmp_path):
    result = invoke(style_mixing.main, ['--network', network['pkl'], '--rows', '0-1', '--cols', '5-6',
                                        '--styles', '0-2', '--outdir', tmp_path])
    assert result.exit_code == 0, result.output
    assert {'grid.png', '0-5.nii.gz', '1-6.nii.gz'} <= set(os.listdir(tmp_path))
    G = network['G']
    vols = style_mixing.style_mix(G, [0], [5], list(range(G.num_ws)), torch.zeros(1, 0), 1.0, 'const',
                                  torch.device('cpu'))
    assert np.allclose(vols[(0, 5)], vols[5], atol=1e-6)  # Taking every layer from the column seed gives it.
    bad = invoke(style_mixing.main, ['--network', network['pkl'], '--rows', '0', '--cols', '1',
                                     '--styles', f'0-{G.num_ws}', '--outdir', tmp_path])
    assert bad.exit_code == 2 and 'layers' in bad.output


def test_projector_reduces_mse_tenfold(network, tmp_path):
    G = network['G']
    with torch.no_grad():
        target = G(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(4)), torch.zeros(1, 0),
                   noise_mode='const')[0]
    w, noises, losses = projector.project(G, target, num_steps=200, w_avg_samples=500)
    assert w.shape == (G.num_ws, G.w_dim) and noises
    assert losses[-1] * 10 <= losses[0], (losses[0], losses[-1])


def test_projector_cli_and_projected_w(network, tmp_path):
    G = network['G']
    with torch.no_grad():
        target = G(torch.randn(1, G.z_dim), torch.zeros(1, 0), noise_mode='const')[0, 0].numpy()
    np.save(tmp_path / 'target.npy', target)
    result = invoke(projector.main, ['--network', network['pkl'], '--target', tmp_path / 'target.npy',
                                     '--num-steps', 20, '--outdir', tmp_path / 'proj'])
    assert result.exit_code == 0, result.output
    assert {'projected_w.npz', 'proj.nii.gz', 'proj.png'} <= set(os.listdir(tmp_path / 'proj'))
    result = invoke(generate.main, ['--network', network['pkl'], '--projected-w', tmp_path / 'proj' / 'projected_w.npz',
                                    '--outdir', tmp_path / 'render'])
    assert result.exit_code == 0 and os.listdir(tmp_path / 'render') == ['proj00.nii.gz'], result.output


def test_outdir_that_is_a_file_is_a_clear_error(network, tmp_path):
    (tmp_path / 'taken').write_text('x')
    result = invoke(generate.main, ['--network', network['pkl'], '--seeds', '1', '--outdir', tmp_path / 'taken'])
    assert result.exit_code == 2 and 'is a file; expected a folder' in result.output, result.output
