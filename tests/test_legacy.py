# SPDX-License-Identifier: Apache-2.0
"""legacy.py: the safe export round trip (also through generate.py and style_mixing.py), one-line errors for files
that are not networks, and files from strangers refused unless trusted."""

import copy
import json
import os
import pickle

import nibabel as nib
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dataset_tool
import generate
import legacy
import style_mixing
from tests.helpers.cli import invoke
from tests.helpers.networks import same_volume
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

#----------------------------------------------------------------------------
# The safe export through the tools: the same volumes as the snapshot, and a dataset's record for an old one.


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
# Files from strangers: refused unless trusted, and files that are no network.


class Calls:
    """Pickles as a call of `func(*args)`: what a malicious file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def write_pickle(path, value) -> str:
    with open(path, 'wb') as f:
        pickle.dump(value, f)
    return str(path)


def with_unknown_source(G) -> Calls:
    """G pickled with a stored source this release does not know (harmless: a comment more)."""
    func, (meta,) = G.__reduce__()
    return Calls(func, dict(meta, module_src=meta['module_src'] + '\n# changed by someone else\n'))


def test_a_pickle_that_runs_code_is_refused_in_any_name(snapshot, tmp_path):
    marker = tmp_path / 'marker'
    evil = dict(G_ema=Calls(os.system, f'touch {marker}'))
    for name, message in [('evil.pkl', 'evil.pkl is refused: it names posix.system, which a network snapshot does '
                                        'not need; loading it could run code; pass --trust-pickle'),
                          ('G.pt', 'G.pt is a plain pickle, not a safe export'),
                          ('G', 'G is refused: it names posix.system')]:
        with pytest.raises(ValueError) as info:
            legacy.load_network(write_pickle(tmp_path / name, evil))
        assert message in str(info.value) and 'STYLEGAN3D_TRUST_PICKLE=1' in str(info.value)
        assert not marker.exists()
    (tmp_path / 'notes.pt').write_text('not a network\n')  # No pickle at all: no word of trust.
    with pytest.raises(ValueError, match=r'notes.pt is neither a network snapshot nor a safe export \(not a zip'):
        legacy.load_network(str(tmp_path / 'notes.pt'))


def test_trust_runs_a_pickle_after_one_warning(snapshot, tmp_path, capsys, monkeypatch):
    path = write_pickle(tmp_path / 'other.pkl', dict(G_ema=with_unknown_source(snapshot['G'])))
    with pytest.raises(ValueError, match='comes with stored code for training.networks that this release does not '
                                         'know'):
        legacy.load_network(path)
    for trust, env in [(True, None), (None, '1'), (None, 'yes')]:
        if env is not None:
            monkeypatch.setenv('STYLEGAN3D_TRUST_PICKLE', env)
        G = legacy.load_network(path, trust_pickle=trust)['G_ema']
        assert torch.equal(G.mapping.fc0.weight, snapshot['G'].mapping.fc0.weight)
        warnings = capsys.readouterr().err.splitlines()
        assert len(warnings) == 1 and warnings[0].startswith(f'Warning: {path}: its Generator comes with stored code')
        assert 'loading it anyway since you trust it' in warnings[0]
    monkeypatch.setenv('STYLEGAN3D_TRUST_PICKLE', '0')
    with pytest.raises(ValueError, match='pass --trust-pickle'):
        legacy.load_network(path)
    with pytest.raises(ValueError, match='pass --trust-pickle'):  # The argument wins over the environment.
        monkeypatch.setenv('STYLEGAN3D_TRUST_PICKLE', '1')
        legacy.load_network(path, trust_pickle=False)


def test_files_that_are_no_network_give_one_line(snapshot, tmp_path):
    G = snapshot['G']
    broken_record = legacy.VolumeInfo(spacing=(1.0, 1.0, 2.0))
    object.__setattr__(broken_record, 'spacing', (-1.0, 1.0, 2.0))  # As unpickling sets it: no checks.
    odd = copy.deepcopy(G)
    odd.volume_info = broken_record
    cases = {
        'int.pkl': ({'G_ema': 42}, 'holds a G_ema of type int, not a generator; is it a stylegan2-ada-3d network'),
        'list.pkl': ([1, 2], 'holds no G_ema'),
        'module.pkl': ({'G_ema': torch.nn.Linear(2, 2)}, 'holds a G_ema of type Linear, not a generator'),
        'd.pkl': ({'G_ema': G, 'D': 'x'}, 'holds a D of type str, not a network'),
        'kwargs.pkl': ({'G_ema': G, 'training_set_kwargs': 5}, 'holds training_set_kwargs of type int, not a dict'),
        'record.pkl': ({'G_ema': odd}, 'holds a damaged volume record (ValueError'),
    }
    for name, (value, message) in cases.items():
        path = write_pickle(tmp_path / name, value)
        with pytest.raises(ValueError) as info:
            legacy.load_network(path, trust_pickle=True)  # Trusted or not: no network, no traceback later.
        assert f'{name} {message}' in str(info.value) and '\n' not in str(info.value), str(info.value)


def test_dataset_options_may_name_only_the_dataset_class(snapshot, tmp_path, capsys):
    # calc_metrics.py builds the dataset by this name: logging.basicConfig(filename=...) would create a file, and
    # other names run other code. Exports carry the options too, as JSON.
    marker = tmp_path / 'marker'
    kwargs = dict(class_name='logging.basicConfig', filename=str(marker), force=True)
    legacy.export_network(snapshot['G'], kwargs, str(tmp_path / 'G.pt'))
    pkl = write_pickle(tmp_path / 'snap.pkl', dict(G_ema=snapshot['G'], training_set_kwargs=kwargs))
    for path in (str(tmp_path / 'G.pt'), pkl):
        with pytest.raises(ValueError, match='is refused: its training_set_kwargs name "logging.basicConfig" as the '
                                             'dataset class, where only training.dataset.VolumeFolderDataset is built'):
            legacy.load_network(path)
        assert legacy.load_network(path, trust_pickle=True)['training_set_kwargs'] == kwargs
        assert 'Warning:' in capsys.readouterr().err
    assert not marker.exists()
