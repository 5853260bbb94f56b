# SPDX-License-Identifier: Apache-2.0
"""projector.py and training/projection.py on tiny untrained generators: the optimisation, the projected w rendered
by generate.py, the target read in the training orientation and spacing, and bad input."""

import os

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import torch

import generate
import legacy
import projector
from tests.helpers.cli import assert_one_line_error, invoke
from tests.helpers.networks import (ROTATED, SHAPE, SPACING, TOLERANCE, different_volumes, expected_ras_affine,
                                    same_volume, stored_uint, tiny_generator)
from training import generation, projection
from volumes import volume_io
from volumes.contract import LPS_DIRECTION


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
    volume_io.write_volume(tmp_path / 't.nii.gz', array, (SPACING[0] / 2, *SPACING[1:]), LPS_DIRECTION)
    target = projection.load_target(str(tmp_path / 't.nii.gz'),
                                    tiny_generator(direction=LPS_DIRECTION, percentiles=(0, 100)))
    assert target.shape == (1, *SHAPE)
    profile = target[0, D // 2, H // 2].numpy()  # along W
    assert int((profile > 0).sum()) == 8 and profile[W // 2] == pytest.approx(1, abs=1e-3)
