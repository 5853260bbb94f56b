# SPDX-License-Identifier: Apache-2.0
"""legacy.py: the safe export round trip, and one-line errors for files that are not networks."""

import json
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

import legacy
from training.networks import Generator
from volumes.contract import IntensityMapping, VolumeInfo

ROTATED = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


@pytest.fixture(scope='module')
def snapshot(tmp_path_factory):
    root = tmp_path_factory.mktemp('legacy')
    torch.manual_seed(0)
    info = VolumeInfo(spacing=(1.0, 1.0, 2.0), direction=ROTATED, centre=(3.0, -4.0, 5.0),
                      intensity=IntensityMapping(dtype='uint16'))
    G = Generator(z_dim=4, c_dim=0, w_dim=4, img_shape=(4, 8, 8), img_channels=1, mapping_kwargs=dict(num_layers=1),
                  synthesis_kwargs=dict(channel_base=32, channel_max=8), volume_info=info.to_dict()).eval()
    path = root / 'snap.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None,
                         training_set_kwargs=dict(path=str(root / 'data.zip'))), f)
    export = root / 'G.pt'
    result = CliRunner().invoke(legacy.cli, ['export', '--network', str(path), '--dest', str(export)])
    assert result.exit_code == 0, result.output
    return dict(G=G, pkl=str(path), export=str(export))


def test_export_round_trip(snapshot):
    payload = torch.load(snapshot['export'], weights_only=True)  # No code runs: plain tensors and strings.
    config = json.loads(payload['config'])
    assert config['class_name'] == 'training.networks.Generator'
    assert config['init_kwargs']['volume_info'] == snapshot['G'].volume_info.to_dict()  # The record, as JSON.
    data = legacy.load_network(snapshot['export'])
    assert data['G'] is None and data['D'] is None
    G, H = snapshot['G'], data['G_ema']
    assert type(H).__name__ == 'Generator' and H.volume_info == G.volume_info
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(G(z, torch.zeros(3, 0), noise_mode='const'), H(z, torch.zeros(3, 0), noise_mode='const'))


def test_export_names_no_code(snapshot, tmp_path):
    marker = tmp_path / 'marker'
    payload = dict(format=legacy.EXPORT_FORMAT, state_dict={},
                   config=json.dumps(dict(class_name='os.system', init_args=[f'touch {marker}'], init_kwargs={})))
    torch.save(payload, tmp_path / 'evil.pt')
    with pytest.raises(ValueError, match='only training.networks.Generator is allowed'):
        legacy.load_network(str(tmp_path / 'evil.pt'))
    assert not marker.exists()
    with pytest.raises(ValueError, match='cannot export a Linear'):
        legacy.export_network(torch.nn.Linear(2, 2), None, str(tmp_path / 'linear.pt'))
    assert not os.path.exists(tmp_path / 'linear.pt')


def damaged_exports(snapshot, tmp_path) -> dict:
    with open(snapshot['export'], 'rb') as f:
        good = f.read()
    files = {
        'truncated.pt': good[:len(good) // 2],
        'flipped.pt': good[:len(good) // 2] + bytes(b ^ 0xFF for b in good[len(good) // 2:len(good) // 2 + 64])
        + good[len(good) // 2 + 64:],
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    payload = torch.load(snapshot['export'], weights_only=True)
    payload['state_dict'].popitem()
    torch.save(payload, tmp_path / 'missing_weight.pt')
    torch.save(dict(format=legacy.EXPORT_FORMAT, config='{not json'), tmp_path / 'bad_config.pt')
    torch.save(dict(weights=torch.zeros(2)), tmp_path / 'other_dict.pt')
    with open(tmp_path / 'no_g_ema.pkl', 'wb') as f:
        pickle.dump(dict(G=None), f)
    torch.save(torch.nn.Linear(2, 2), tmp_path / 'module.pt')
    return {name: tmp_path / name for name in ('truncated.pt', 'flipped.pt', 'missing_weight.pt', 'bad_config.pt',
                                               'other_dict.pt', 'no_g_ema.pkl', 'module.pt')}


def test_damaged_files_give_one_line_errors(snapshot, tmp_path):
    expected = {'truncated.pt': 'is a truncated or damaged zip archive',
                'flipped.pt': 'is a damaged safe export: its record',
                'missing_weight.pt': 'is a damaged safe export (RuntimeError: Error(s) in loading state_dict for '
                                     'Generator: Missing key(s)',
                'bad_config.pt': 'is a damaged safe export (JSONDecodeError',
                'other_dict.pt': f'is a PyTorch file but not a {legacy.EXPORT_FORMAT} export',
                'no_g_ema.pkl': 'holds no G_ema',
                'module.pt': 'holds pickled Python objects, not only weights'}
    for name, path in damaged_exports(snapshot, tmp_path).items():
        with pytest.raises(ValueError) as info:
            legacy.load_network(str(path))
        message = str(info.value)
        assert f'{name} {expected[name]}' in message and '\n' not in message and len(message) < 400, message


def test_export_cli_errors(snapshot, tmp_path):
    (tmp_path / 'notes.txt').write_text('hello\n')
    result = CliRunner().invoke(legacy.cli, ['export', '--network', str(tmp_path / 'notes.txt'),
                                             '--dest', str(tmp_path / 'G.pt')])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert result.output.rstrip().splitlines()[-1].startswith('Error: Invalid value for --network: ')
    assert 'notes.txt is neither a network snapshot nor a safe export' in result.output
    result = CliRunner().invoke(legacy.cli, ['export', '--network', snapshot['pkl'], '--dest', str(tmp_path)])
    assert result.exit_code == 2 and 'is a folder' in result.output
    assert sorted(os.listdir(tmp_path)) == ['notes.txt']
