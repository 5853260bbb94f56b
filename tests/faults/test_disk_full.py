# SPDX-License-Identifier: Apache-2.0
"""A full disk, emulated with RLIMIT_FSIZE: every command stops with one line naming the file it could not write,
a non-zero exit and no partial file; nothing reports success."""

import os
import pickle

import numpy as np
import pytest

from tests.helpers.cli import assert_clean_failure, run_cli
from tests.helpers.training import SIZE, TRAIN

pytestmark = pytest.mark.slow  # fault injection: the CLIs as subprocesses


LIMIT = 1200  # Bytes per file: a tiny NIfTI volume fits (about 1 kB), a snapshot, a PNG grid or an archive do not.


@pytest.mark.parametrize('fmt', ['nii.gz', 'npy'])
def test_generate(network, outdir, fmt):
    result = run_cli(['generate.py', f'--network={network}', '--count=40', f'--format={fmt}', f'--outdir={outdir}'],
                     file_size_limit=LIMIT if fmt == 'nii.gz' else 1000)
    line = assert_clean_failure(result, 'cannot write', str(outdir), folders=[outdir])
    assert ('File too large' in line or 'is the disk full?' in line) and 'Wrote' not in result.stdout
    for name in os.listdir(outdir):  # What was written before the disk filled up is whole.
        if fmt == 'npy':
            assert np.load(outdir / name).shape == (8, 16, 16)


@pytest.fixture(scope='module')
def network_32(tmp_path_factory):
    """A tiny untrained generator of 32x32x8 uint8 volumes (8 kB: more than C's stdio buffer, so the NIfTI library
    sees the short write itself and prints about it)."""
    import torch

    from training.networks import Generator
    from volumes.contract import VolumeInfo
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_shape=(8, 32, 32), img_channels=1, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16),
                  volume_info=VolumeInfo(spacing=(1.0, 1.0, 2.0)).to_dict()).eval()
    path = tmp_path_factory.mktemp('net32') / 'network-snapshot-000000.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None), f)
    return str(path)


def test_generate_uncompressed_nifti_says_one_line(network_32, outdir):
    # ITK's NIfTI code prints "** ERROR: NWAD: wrote only ... bytes" on file descriptor 2 itself; that line must
    # become the project's one line, not a second line above it.
    result = run_cli(['generate.py', f'--network={network_32}', '--count=3', '--format=nii', f'--outdir={outdir}'],
                     file_size_limit=6000)  # The 352-byte header and part of the 8192 bytes of voxels fit.
    line = assert_clean_failure(result, 'cannot write', str(outdir / 'seed0000.nii'), folders=[outdir])
    assert line.endswith(': wrote only 5648 of 8192 bytes to file; is the disk full?'), line
    assert 'NWAD' not in result.stdout + result.stderr and os.listdir(outdir) == []


def test_style_mixing(network, outdir):
    result = run_cli(['style_mixing.py', f'--network={network}', '--rows=0-5', '--cols=10-15', f'--outdir={outdir}'],
                     file_size_limit=LIMIT)
    assert_clean_failure(result, 'cannot write', str(outdir), folders=[outdir])


def test_projector(network, outdir, tmp_path):
    target = tmp_path / 'target.npy'
    np.save(target, np.random.default_rng(0).random((8, 16, 16)).astype(np.float32))
    result = run_cli(['projector.py', f'--network={network}', f'--target={target}', '--num-steps=2',
                      f'--outdir={outdir}'], file_size_limit=LIMIT)
    assert_clean_failure(result, 'cannot write', str(outdir), folders=[outdir])


def test_dataset_tool(outdir):
    result = run_cli(['dataset_tool.py', '--source=phantom:4', f'--dest={outdir / "d.zip"}', f'--size={SIZE}'],
                     file_size_limit=5_000)  # Four volumes of 2 kB do not fit.
    assert_clean_failure(result, '--dest', 'd.zip', 'File too large')
    assert os.listdir(outdir) == []


def test_training(phantoms, tmp_path):
    result = run_cli(['train.py', f'--outdir={tmp_path / "runs"}', f'--data={phantoms}', *TRAIN, '--kimg=0.008'],
                     file_size_limit=200_000)  # The options, log and PNGs fit; the first snapshot does not.
    assert_clean_failure(result, 'cannot write', 'network-snapshot-000000_004.pkl', 'File too large')
    assert os.listdir(tmp_path / 'runs') == []  # The run stopped before its first snapshot: no run directory.


def test_export(network, outdir):
    result = run_cli(['legacy.py', 'export', f'--network={network}', f'--dest={outdir / "G.pt"}'],
                     file_size_limit=LIMIT)
    assert_clean_failure(result, 'cannot write', 'G.pt', 'File too large')
    assert os.listdir(outdir) == []


def test_metric_cache(network, tmp_path):
    cache = tmp_path / 'cache'
    result = run_cli(['calc_metrics.py', f'--network={network}', '--metrics=mmd4_full'], file_size_limit=LIMIT,
                     env=dict(DNNLIB_CACHE_DIR=str(cache)))
    assert_clean_failure(result, 'cannot write', str(cache / 'gan-metrics'), 'File too large', folders=[cache])


def test_augment_preview(phantoms, outdir):
    result = run_cli(['-m', 'training.augment', '--data', phantoms, '--num', '6', '--dest', outdir / 'grid.png'],
                     file_size_limit=LIMIT)
    assert_clean_failure(result, 'cannot write', 'grid.png', 'File too large')
    assert os.listdir(outdir) == []
