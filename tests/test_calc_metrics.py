# SPDX-License-Identifier: Apache-2.0
"""calc_metrics.py: the CLI on a snapshot in a run directory, the importable core, and its one-line errors."""

import glob
import json
import os
import pickle

import pytest
import torch
from click.testing import CliRunner

import calc_metrics
import legacy
from metrics import metric_utils
from tests.helpers import detectors
from torch_utils import safe_unpickle
from training.networks import Generator

SHAPE = (8, 16, 16)


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    """A run directory holding a snapshot of a fake generator whose training data is recorded in the pickle."""
    safe_unpickle.add_known_module(detectors)  # The test double is no network of the project: admitted by its test.
    root = tmp_path_factory.mktemp('calc')
    G = detectors.FakeGenerator(SHAPE)
    data = detectors.write_dataset(str(root / 'reals'), detectors.sample_real_volumes(G, 8))
    run_dir = root / '00000-reals-demo'
    run_dir.mkdir()
    (run_dir / 'training_options.json').write_text('{}')
    snapshot = run_dir / 'network-snapshot-000004.pkl'
    training_set_kwargs = detectors.dataset_kwargs(data, use_labels=False, xflip=False, img_shape=list(SHAPE))
    with open(snapshot, 'wb') as f:
        pickle.dump(dict(G=None, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=training_set_kwargs), f)
    bare = root / 'bare.pkl'  # No dataset recorded.
    with open(bare, 'wb') as f:
        pickle.dump(dict(G_ema=G), f)
    detector = detectors.write_detector(root / 'tinydet.pt')
    vgg16 = detectors.write_detector(root / 'tinyvgg.pt', num_features=7, seed=1)
    return dict(root=root, data=data, run_dir=run_dir, snapshot=str(snapshot), bare=str(bare), detector=detector,
                vgg16=vgg16)


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def _invoke(*args):
    return CliRunner().invoke(calc_metrics.main, list(args))


def test_cli_writes_jsonl_next_to_the_snapshot_and_prints_a_table(run):
    result = _invoke(f'--network={run["snapshot"]}', '--metrics=mmd_full,msssim_gen3', '--seed=0', '--no-progress')
    assert result.exit_code == 0, result.output
    lines = (run['run_dir'] / 'metric-mmd_full.jsonl').read_text().splitlines()
    record = json.loads(lines[-1])
    assert record['metric'] == 'mmd_full' and record['snapshot_pkl'] == 'network-snapshot-000004.pkl'
    assert record['num_gpus'] == 1 and set(record['results']) == {'mmd_full'}
    assert record['details']['seed'] == 0 and record['details']['num_gen_volumes'] == 8
    assert (run['run_dir'] / 'metric-msssim_gen3.jsonl').is_file()
    table = result.output[result.output.index('metric '):]
    assert 'mmd_full ' in table and 'msssim_gen3_real ' in table


def test_cli_with_tiny_detectors_end_to_end_and_the_real_cache(run, cache_dir, monkeypatch):
    # The TorchScript stand-ins go through the CLI as the official Inception and VGG16 would; the second run reads
    # the real statistics from the cache, so the detectors see only the generated slices.
    seen = []
    real_get = metric_utils.get_detector

    def counting_get(url, device, what='detector'):
        detector = real_get(url, device, what)

        def count(x, **kwargs):
            seen.append((os.path.basename(url), x.shape[0]))
            return detector(x, **kwargs)
        return count
    monkeypatch.setattr(metric_utils, 'get_detector', counting_get)
    args = [f'--network={run["snapshot"]}', '--metrics=fid6_tri,kid6_all,pr63_mid', f'--inception={run["detector"]}',
            f'--vgg16={run["vgg16"]}', '--seed=2', '--no-progress']
    records = []
    for attempt in range(2):
        seen.clear()
        result = _invoke(*args)
        assert result.exit_code == 0, result.output
        records.append([json.loads(line) for line in result.output.splitlines() if line.startswith('{')])
        slices = {name: sum(n for det, n in seen if det == name) for name in ('tinydet.pt', 'tinyvgg.pt')}
        # Generated: 6 volumes x (3 tri planes + 8 axial slices) for FID and KID, 6 middle slices for P/R.
        # Reals (first run only): 8 volumes x the same.
        assert slices == {'tinydet.pt': (6 + 8 * (attempt == 0)) * (3 + 8), 'tinyvgg.pt': 6 + 8 * (attempt == 0)}
    assert [r['results'] for r in records[0]] == [r['results'] for r in records[1]]
    assert [r['metric'] for r in records[0]] == ['fid6_tri', 'kid6_all', 'pr63_mid']
    assert records[0][0]['details']['detector'] == run['detector']  # FID: Inception.
    assert records[0][2]['details']['detector'] == run['vgg16']  # Precision/recall: VGG16.
    assert len(glob.glob(str(cache_dir / 'gan-metrics' / 'reals-*.npz'))) == 3
    lines = (run['run_dir'] / 'metric-fid6_tri.jsonl').read_text().splitlines()
    assert json.loads(lines[-1])['results'] == records[1][0]['results']


def test_safe_export_and_home_relative_paths(run, tmp_path, monkeypatch):
    torch.manual_seed(0)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_shape=SHAPE, img_channels=1, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=128, channel_max=16)).eval()
    export = tmp_path / 'G.pt'
    legacy.export_network(G, detectors.dataset_kwargs(run['data']), str(export))  # Records the dataset, no code.
    result = _invoke(f'--network={export}', '--metrics=mmd4_full', '--seed=0', '--no-progress')
    assert result.exit_code == 0, result.output
    record = json.loads(next(line for line in result.output.splitlines() if line.startswith('{')))
    assert record['details']['num_real_volumes'] == 8 and record['snapshot_pkl'] == str(export)
    monkeypatch.setenv('HOME', str(tmp_path))  # '--data=~/...': the shell does not expand '~' after '='.
    os.symlink(run['data'], tmp_path / 'reals')
    result = _invoke('--network=~/G.pt', '--data=~/reals', '--metrics=mmd4_full', '--seed=0', '--no-progress')
    assert result.exit_code == 0, result.output
    assert json.loads(next(line for line in result.output.splitlines() if line.startswith('{')))['results'] == \
        record['results']


def test_progress_bars_end_their_lines_before_results(run):
    # stdout and stderr in one stream, as in a log file: every result line starts on a line of its own.
    result = _invoke(f'--network={run["snapshot"]}', '--metrics=fid4_mid,mmd4_full', f'--inception={run["detector"]}',
                     '--seed=0', '--progress')
    assert result.exit_code == 0, result.output
    lines = result.output.split('\n')
    assert any('100%' in line and 'generated (tinydet)' in line for line in lines)  # The bars were shown.
    results = [line for line in lines if '"results"' in line]
    assert len(results) == 2 and all(line.startswith('{"results"') for line in results), result.output
    table = lines.index(next(line for line in lines if line.startswith('metric ')))
    assert lines[table - 1] == '' and '%' not in '\n'.join(lines[table:])


def test_importable_core_with_data_override_and_local_detector(run):
    results = calc_metrics.calc_metrics(run['bare'], ['fid4_tri', 'pr43_mid'], data=run['data'],
                                        inception=f'file://{run["detector"]}', vgg16=run['vgg16'], seed=1,
                                        truncation_psi=0.7)  # A detector as a URL, the other as a path.
    assert [r.metric for r in results] == ['fid4_tri', 'pr43_mid']
    assert results[0].details['detector'] == f'file://{run["detector"]}'
    assert set(results[0].results) == {'fid4_tri', 'fid4_tri_axial', 'fid4_tri_coronal', 'fid4_tri_sagittal'}
    assert set(results[1].results) == {'pr43_mid_precision', 'pr43_mid_recall'}
    assert not list(run['root'].glob('metric-*.jsonl'))  # bare.pkl is not in a run directory.


def test_mirror_option_reaches_the_dataset(run):
    network = dict(G_ema=detectors.FakeGenerator(SHAPE),
                   training_set_kwargs=detectors.dataset_kwargs(run['data'], xflip=True))
    # As the official _full metrics: the real volumes as they are, unless --mirror asks for the copies.
    assert calc_metrics.resolve_dataset_kwargs(network, None, None).xflip is False
    assert calc_metrics.resolve_dataset_kwargs(network, None, True).xflip is True
    kwargs = calc_metrics.resolve_dataset_kwargs(network, '/data/other.zip', None)
    assert kwargs.path == '/data/other.zip' and kwargs.xflip is False and kwargs.img_shape == list(SHAPE)


@pytest.mark.parametrize('args, code, message', [
    (['--metrics=fid3k_full'], 2, 'unknown metric "fid3k_full"; expected one of fid3d_medicalnet10, fid3d_medicalnet50, fid3k_mid,'),
    (['--metrics=pr4k3_mid', '--vgg16=http://127.0.0.1:9/vgg16.pt'], 1,  # Offline: says where to put the file.
     'VGG16 detector (--vgg16): Cannot download http://127.0.0.1:9/vgg16.pt'),
    (['--metrics=mmd_full', '--network={tinydet}'], 1, 'tinydet.pt is not a readable safe export'),
    (['--metrics=mmd_full', '--data={root}'], 1, 'has no dataset.json at its root'),
    (['--metrics=mmd_full', '--network=/nonexistent/net.pkl'], 2, 'no such file: /nonexistent/net.pkl'),
    (['--metrics=fid4_mid', '--inception=/nonexistent/inception.pt'], 1,
     'Inception detector (--inception): No such file: /nonexistent/inception.pt'),
    (['--metrics=fid3d4_medicalnet10'], 1, 'pass their path or URL with --medicalnet'),
    (['--metrics=mmd_full', '--data=/nonexistent/data.zip'], 2, 'no such file or folder: /nonexistent/data.zip'),
])
def test_cli_errors_are_one_line(run, cache_dir, args, code, message):
    args = [a.format(tinydet=run['detector'], root=run['root']) for a in args]
    if not any(a.startswith('--network') for a in args):
        args = [f'--network={run["snapshot"]}'] + args
    result = _invoke(*args, '--no-progress')
    assert result.exit_code == code, result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith('Error')]
    assert len(error_lines) == 1 and message in error_lines[0], result.output
    assert 'Traceback' not in result.output and 'Warning' not in result.output
    if 'Cannot download' in message:
        assert f'put it at {cache_dir / "downloads"}' in error_lines[0]


def test_network_without_dataset_needs_data(run):
    result = _invoke(f'--network={run["bare"]}', '--metrics=mmd_full', '--no-progress')
    assert result.exit_code == 1 and 'give one with --data' in result.output
