# SPDX-License-Identifier: Apache-2.0
"""Fixtures that test modules in more than one file use: the tiny generators of generate.py, style_mixing.py and
projector.py, the labelled network of the nnU-Net export and output folder tests, and a phantom dataset for train.py
and the training loop. Each is built once per module that asks for it (module scope)."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import dataset_tool
from tests.helpers.cli import REPO
from tests.helpers.networks import tiny_generator, tiny_network, write_snapshot
from tests.helpers.volumes import PACKED_NAMES, write_labelled_case
from training.dataset import VolumeFolderDataset
from volumes.contract import LPS_DIRECTION


@pytest.fixture(scope='module')
def network(tmp_path_factory):
    """Snapshot pickles of tiny generators for 16x12x8 (x, y, z) volumes; their training data is not there."""
    root = tmp_path_factory.mktemp('net')
    gone = root / 'moved-away.zip'
    G = tiny_generator()
    return dict(
        G=G,
        pkl=write_snapshot(root / 'network-snapshot-000000.pkl', G, gone),
        pkl16=write_snapshot(root / 'uint16.pkl', tiny_generator(direction=LPS_DIRECTION,
                                                                 dtype='uint16', centre=(0, 0, 0)), gone),
        noisy=write_snapshot(root / 'noisy.pkl', tiny_generator(noise_strength=0.3), gone),
        cond=write_snapshot(root / 'cond.pkl', tiny_generator(c_dim=3), gone))


@pytest.fixture(scope='module')
def labelled(tmp_path_factory):
    """Label maps with the values 1, 7, 8, 9 packed by dataset_tool.py --seg --seg-names, and a snapshot of a tiny
    generator with that dataset's record."""
    root = tmp_path_factory.mktemp('labelled')
    for i in range(2):
        write_labelled_case(root / 'src', f'case{i}', seed=i)
    (root / 'names.json').write_text(json.dumps({str(k): v for k, v in PACKED_NAMES.items()}))
    packed = CliRunner().invoke(dataset_tool.main, ['--source', str(root / 'src'), '--dest', str(root / 'd.zip'),
                                                    '--seg', '*_seg.nii.gz', '--seg-names', str(root / 'names.json')])
    assert packed.exit_code == 0, packed.output
    info = VolumeFolderDataset(str(root / 'd.zip'), load_seg=True).volume_info
    assert info.label_values == (0, 1, 7, 8, 9)
    return dict(root=root, info=info, pkl=write_snapshot(root / 'labelled.pkl', tiny_network(info)))


@pytest.fixture(scope='module')
def phantom_zip(tmp_path_factory):
    path = tmp_path_factory.mktemp('data') / 'phantoms.zip'
    subprocess.run([sys.executable, 'dataset_tool.py', '--source=phantom:10', f'--dest={path}', '--size=16x16x8'],
                   cwd=REPO, check=True, capture_output=True)
    return str(path)
