# SPDX-License-Identifier: Apache-2.0
"""calc_metrics.py: the CLI on a snapshot in a run directory, the importable core, and its one-line errors."""

import json
import pickle

import pytest
from click.testing import CliRunner

import calc_metrics
from tests.metrics import fakes

SHAPE = (8, 16, 16)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A run directory holding a snapshot of a fake generator whose training data is recorded in the pickle."""
    root = tmp_path_factory.mktemp('calc')
    G = fakes.FakeGenerator(SHAPE)
    data = fakes.write_dataset(str(root / 'reals'), fakes.sample_real_volumes(G, 8))
    run_dir = root / '00000-reals-demo'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    snapshot = run_dir / 'network-snapshot-000004.pkl'
    training_set_kwargs = fakes.dataset_kwargs(data, use_labels=False, xflip=False, img_shape=list(SHAPE))
    with open(snapshot, 'wb') as f:
        pickle.dump(dict(G=None, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=training_set_kwargs), f)
    bare = root / 'bare.pkl'  # No dataset recorded.
    with open(bare, 'wb') as f:
        pickle.dump(dict(G_ema=G), f)
    detector = fakes.write_detector(root / 'tinydet.pt')
    return dict(root=root, data=data, run_dir=run_dir, snapshot=str(snapshot), bare=str(bare), detector=detector)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))


def _invoke(*args):
    return CliRunner().invoke(calc_metrics.main, list(args))


def test_cli_writes_jsonl_next_to_the_snapshot_and_prints_a_table(run):
    result = _invoke(f'--network={run["snapshot"]}', '--metrics=mmd_full,msssim_gen3', '--seed=0', '--verbose=false')
    assert result.exit_code == 0, result.output
    lines = (run['run_dir'] / 'metric-mmd_full.jsonl').read_text().splitlines()
    record = json.loads(lines[-1])
    assert record['metric'] == 'mmd_full' and record['snapshot_pkl'] == 'network-snapshot-000004.pkl'
    assert record['num_gpus'] == 1 and set(record['results']) == {'mmd_full'}
    assert record['details']['seed'] == 0 and record['details']['num_gen_volumes'] == 8
    assert (run['run_dir'] / 'metric-msssim_gen3.jsonl').is_file()
    table = result.output[result.output.index('metric '):]
    assert 'mmd_full ' in table and 'msssim_gen3_real ' in table


def test_importable_core_with_data_override_and_local_detector(run):
    results = calc_metrics.calc_metrics(run['bare'], ['fid4_tri', 'pr43_mid'], data=run['data'],
                                        inception=run['detector'], vgg16=run['detector'], seed=1, truncation_psi=0.7)
    assert [r.metric for r in results] == ['fid4_tri', 'pr43_mid']
    assert set(results[0].results) == {'fid4_tri', 'fid4_tri_axial', 'fid4_tri_coronal', 'fid4_tri_sagittal'}
    assert set(results[1].results) == {'pr43_mid_precision', 'pr43_mid_recall'}
    assert not list(run['root'].glob('metric-*.jsonl'))  # bare.pkl is not in a run directory.


def test_mirror_option_reaches_the_dataset(run):
    network = dict(G_ema=fakes.FakeGenerator(SHAPE), training_set_kwargs=fakes.dataset_kwargs(run['data'], xflip=True))
    assert calc_metrics.resolve_dataset_kwargs(network, None, None).xflip is True
    assert calc_metrics.resolve_dataset_kwargs(network, None, False).xflip is False
    kwargs = calc_metrics.resolve_dataset_kwargs(network, '/data/other.zip', None)
    assert kwargs.path == '/data/other.zip' and kwargs.xflip is False and kwargs.img_shape == list(SHAPE)


@pytest.mark.parametrize('args, code, message', [
    (['--metrics=fid3k_full'], 2, 'unknown metric "fid3k_full"'),
    (['--metrics=mmd_full', '--network=/nonexistent/net.pkl'], 2, 'no such file: /nonexistent/net.pkl'),
    (['--metrics=fid4_mid', '--inception=/nonexistent/inception.pt'], 1, 'No such file: /nonexistent/inception.pt'),
    (['--metrics=fid3d4_medicalnet10'], 1, 'pass their path or URL with --medicalnet'),
    (['--metrics=mmd_full', '--data=/nonexistent/data.zip'], 2, 'no such file or folder: /nonexistent/data.zip'),
])
def test_cli_errors_are_one_line(run, args, code, message):
    if not any(a.startswith('--network') for a in args):
        args = [f'--network={run["snapshot"]}'] + args
    result = _invoke(*args, '--verbose=false')
    assert result.exit_code == code, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(error_lines) == 1 and message in error_lines[0], result.output


def test_network_without_dataset_needs_data(run):
    result = _invoke(f'--network={run["bare"]}', '--metrics=mmd_full', '--verbose=false')
    assert result.exit_code == 1 and 'give one with --data' in result.output
