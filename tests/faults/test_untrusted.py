# SPDX-License-Identifier: Apache-2.0
"""Network files from strangers, run through the tools as a user does: a file whose loading would create a file
(os.system, builtins.open, altered network source; tests/torch_utils/test_persistence.py has more) is refused
with one line naming --trust-pickle and creates nothing; --trust-pickle or STYLEGAN3D_TRUST_PICKLE=1 loads a
trusted file after one warning line; the project's own snapshots, of this tree and of an earlier version, load
without either."""

import os
import pickle

import pytest

from tests.helpers.cli import REPO, assert_clean_failure, run_cli
from tests.helpers.training import TRAIN

pytestmark = pytest.mark.slow  # fault injection: the CLIs as subprocesses


LEGACY_SNAPSHOT = os.path.join(REPO, 'tests', 'data', 'legacy', 'snapshot-v1.pkl')
TRUST = ['--trust-pickle', 'STYLEGAN3D_TRUST_PICKLE=1']  # What every refusal tells the user.


class Calls:
    """Pickles as a call of `func(*args)`: what a malicious file does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def with_source(G, module_src: str) -> Calls:
    """The persistent generator G pickled with another stored module source."""
    func, (meta,) = G.__reduce__()
    return Calls(func, dict(meta, module_src=module_src))


@pytest.fixture(scope='module')
def files(tmp_path_factory, network):
    """Malicious and merely foreign network files; each malicious one would create `marker` when loaded."""
    import legacy
    root = tmp_path_factory.mktemp('strangers')
    marker = root / 'marker'
    G = legacy.load_network(network)['G_ema']
    source = type(G)._orig_module_src
    values = {
        'G.pt': dict(G_ema=Calls(os.system, f'touch {marker}')),  # The name the README gives safe exports.
        'system.pkl': dict(G_ema=Calls(os.system, f'touch {marker}')),
        'open.pkl': dict(G_ema=Calls(open, str(marker), 'w')),
        'altered.pkl': dict(G_ema=with_source(G, source + f'\nopen({str(marker)!r}, "w").close()\n')),
        'foreign.pkl': dict(G_ema=with_source(G, source + '\n# changed by someone else\n')),  # Harmless, unknown.
        'int.pkl': {'G_ema': 42},
    }
    paths = {}
    for name, value in values.items():
        with open(root / name, 'wb') as f:
            pickle.dump(value, f)
        paths[name] = str(root / name)
    return dict(paths, marker=marker)


def tool_args(tool: str, network: str, phantoms: str, outdir) -> list:
    if tool == 'train.py':
        return ['train.py', f'--outdir={outdir}', f'--data={phantoms}', *TRAIN, '--kimg=0.004', f'--resume={network}']
    if tool == 'legacy.py':
        return ['legacy.py', 'export', f'--network={network}', f'--dest={outdir / "G.pt"}']
    extra = {'generate.py': ['--seeds=0'], 'style_mixing.py': ['--rows=0', '--cols=1'],
             'projector.py': [f'--target={phantoms}', '--num-steps=1'],  # The network is read before the target.
             'calc_metrics.py': [f'--data={phantoms}', '--metrics=mmd_full']}[tool]
    args = [tool, f'--network={network}', *extra]
    return args if tool == 'calc_metrics.py' else args + [f'--outdir={outdir}']


@pytest.mark.parametrize('tool', ['generate.py', 'style_mixing.py', 'projector.py', 'calc_metrics.py', 'legacy.py',
                                  'train.py'])
def test_every_tool_refuses_a_pickle_that_runs_code(files, phantoms, outdir, tool):
    result = run_cli(tool_args(tool, files['system.pkl'], phantoms, outdir))
    line = assert_clean_failure(result, 'system.pkl is refused: it names posix.system', *TRUST, folders=(outdir,))
    prefix = {'train.py': 'Cannot resume: ', 'calc_metrics.py': ''}.get(tool, 'Invalid value for --network: ')
    assert line.startswith(f'Error: {prefix}{files["system.pkl"]} is refused')
    assert not files['marker'].exists()
    assert os.listdir(outdir) == []  # No run directory, no output.


@pytest.mark.parametrize('name, fragments', [
    ('G.pt', ['G.pt is a plain pickle, not a safe export', 'read only as a safe export']),
    ('open.pkl', ['open.pkl is refused: it names io.open']),
    ('altered.pkl', ['altered.pkl is refused: its Generator comes with stored code for training.networks that this '
                     'release does not know']),
])
def test_malicious_files_create_nothing(files, outdir, name, fragments):
    result = run_cli(['generate.py', f'--network={files[name]}', '--seeds=0', f'--outdir={outdir}'])
    assert_clean_failure(result, *fragments, *TRUST, folders=(outdir,))
    assert not files['marker'].exists() and os.listdir(outdir) == []


def test_a_pickle_that_is_no_snapshot_is_one_line(files, outdir):
    result = run_cli(['generate.py', f'--network={files["int.pkl"]}', '--seeds=0', f'--outdir={outdir}'])
    assert_clean_failure(result, 'int.pkl holds a G_ema of type int, not a generator; is it a stylegan2-ada-3d '
                                 'network snapshot?', folders=(outdir,))
    assert os.listdir(outdir) == []


@pytest.mark.parametrize('how', ['flag', 'environment'])
def test_trusted_pickle_loads_after_one_warning(files, tmp_path, how):
    outdir = tmp_path / 'out'
    args = ['generate.py', f'--network={files["foreign.pkl"]}', '--seeds=0', f'--outdir={outdir}']
    result = run_cli(args + ['--trust-pickle']) if how == 'flag' else \
        run_cli(args, env={'STYLEGAN3D_TRUST_PICKLE': '1'})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f'Warning: {files["foreign.pkl"]}: its Generator comes with '
                                                   f'stored code'), result.stderr
    assert os.listdir(outdir) == ['seed0000.nii.gz']


@pytest.mark.parametrize('which', ['this tree', 'an earlier version'])
def test_the_projects_snapshots_load_without_the_flag(network, tmp_path, which):
    path = network if which == 'this tree' else LEGACY_SNAPSHOT
    result = run_cli(['generate.py', f'--network={path}', '--seeds=0', f'--outdir={tmp_path / "o"}'])
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Warning' not in result.stderr and 'trust' not in result.stderr
    assert os.listdir(tmp_path / 'o') == ['seed0000.nii.gz']


def test_an_export_naming_a_function_as_its_dataset_runs_nothing(network, phantoms, tmp_path):
    # calc_metrics.py builds the dataset the network file names when --data is not given: logging.basicConfig
    # (filename=...) would create a file there, and other names run other code. The export carries it as JSON.
    import legacy
    marker = tmp_path / 'marker'
    G = legacy.load_network(network)['G_ema']
    export = tmp_path / 'G.pt'
    legacy.export_network(G, dict(class_name='logging.basicConfig', filename=str(marker), force=True), str(export))
    result = run_cli(['calc_metrics.py', f'--network={export}', '--metrics=mmd_full'])
    assert_clean_failure(result, 'G.pt is refused: its training_set_kwargs name "logging.basicConfig" as the dataset '
                                 'class', *TRUST)
    assert not marker.exists()


def test_a_training_state_beside_a_strangers_snapshot_runs_no_code(tmp_path, monkeypatch, capsys):
    # --resume=.../network-snapshot-X.pkl also reads training-state-X.pt beside it: a torch.save zip, read with
    # weights_only (plus numpy's RNG state), so a pickled call in it is refused before the run starts.
    import numpy as np
    import torch

    from training import training_loop
    marker = tmp_path / 'marker'
    evil = tmp_path / 'training-state-000000.pt'
    torch.save(dict(progress={}, optimizers={}, rng=Calls(os.system, f'touch {marker}')), evil)
    monkeypatch.delenv('STYLEGAN3D_TRUST_PICKLE', raising=False)
    with pytest.raises(training_loop.ResumeError) as info:
        training_loop.load_training_state(str(evil), rank=0)
    message = str(info.value)
    assert message.startswith(f'Cannot resume: {evil} holds pickled Python objects, not only weights (it names '
                              f'posix.system)') and all(t in message for t in TRUST) and '\n' not in message
    assert not marker.exists()
    good = tmp_path / 'training-state-000001.pt'
    torch.save(dict(progress=dict(cur_nimg=8), optimizers={}, pl_mean=torch.zeros([]),
                    rng=dict(numpy=np.random.RandomState(3).get_state(), python=__import__('random').getstate())),
               good)
    state = training_loop.load_training_state(str(good), rank=0)  # The project's own: loads without trust.
    assert np.array_equal(state['rng']['numpy'][1], np.random.RandomState(3).get_state()[1])
    monkeypatch.setenv('STYLEGAN3D_TRUST_PICKLE', '1')  # What train.py --trust-pickle sets.
    training_loop.load_training_state(str(evil), rank=0)
    assert marker.exists() and capsys.readouterr().err.count('Warning:') == 1
