# SPDX-License-Identifier: Apache-2.0
"""Shared inputs of the fault tests: a small phantom dataset and a tiny generator snapshot for it."""

import os
import pickle
import sys

import pytest

from tests.helpers.cli import REPO, run_cli
from tests.helpers.training import SIZE


@pytest.fixture(scope='session')
def phantoms(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'phantoms.zip'
    result = run_cli(['dataset_tool.py', '--source=phantom:6', f'--dest={path}', f'--size={SIZE}'])
    assert result.returncode == 0, result.stderr
    return str(path)


@pytest.fixture(scope='session')
def network(tmp_path_factory, phantoms):
    """A snapshot pickle of a tiny untrained generator for the phantoms (noise on, so noise buffers matter)."""
    sys.path.insert(0, REPO)
    import torch

    from training.networks import Generator
    from volumes.contract import VolumeInfo
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_shape=(8, 16, 16), img_channels=1, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16),
                  volume_info=VolumeInfo(spacing=(1.0, 1.0, 2.0)).to_dict()).eval()
    path = tmp_path_factory.mktemp('net') / 'network-snapshot-000000.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=dict(
            class_name='training.dataset.VolumeFolderDataset', path=phantoms)), f)
    return str(path)


@pytest.fixture
def outdir(tmp_path):
    path = tmp_path / 'out'
    os.makedirs(path)
    return path
