# SPDX-License-Identifier: Apache-2.0
"""metric_main end to end: names, calc_metric on a fake generator and dataset with a tiny TorchScript detector,
the real-statistics cache, multi-channel/conditional/uint16 data, MS-SSIM, MMD, 3D FID and the JSONL report."""

import glob
import json
import os

import numpy as np
import pytest
import torch

from metrics import medicalnet, metric_main, metric_utils
from tests.metrics import fakes

SHAPE = (8, 16, 16)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('metrics')
    G = fakes.FakeGenerator(SHAPE)
    data = fakes.write_dataset(str(root / 'reals'), fakes.sample_real_volumes(G, 12))
    detector = fakes.write_detector(root / 'tinydet.pt')
    return dict(G=G, data=data, detector=detector, root=root)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def _calc(setup, metric, G=None, **kwargs):
    kwargs.setdefault('dataset_kwargs', fakes.dataset_kwargs(setup['data']))
    return metric_main.calc_metric(metric, G=G if G is not None else setup['G'], inception_url=setup['detector'],
                                   vgg16_url=setup['detector'], seed=kwargs.pop('seed', 0), **kwargs)

#----------------------------------------------------------------------------
# Names.


def test_metric_names():
    for name in ['fid3k_all', 'fid3k_mid', 'fid3k_tri', 'kid3k_all', 'pr3k3_all', 'fid3d_medicalnet10',
                 'msssim_gen100', 'mmd_full']:
        assert name in metric_main.list_valid_metrics() and metric_main.is_valid_metric(name)
    for name in ['fid500_mid', 'fid50k_all', 'kid2k_tri', 'pr1k5_mid', 'fid3d2k_medicalnet50', 'fid3d_medicalnet18',
                 'msssim_gen7', 'mmd200_full']:
        assert metric_main.is_valid_metric(name), name
    for name in ['fid3k_full', 'fid0_mid', 'pr3k0_all', 'fid3d_medicalnet20', 'mmd_all', 'fid', 'FID3k_all', '']:
        assert not metric_main.is_valid_metric(name), name
    with pytest.raises(ValueError, match='unknown metric "fid3k_full".*fid3k_all'):
        metric_main.get_metric('fid3k_full')


def test_pattern_names_carry_their_numbers():
    fn = metric_main.parse_metric('pr2k5_tri')
    assert fn.keywords == dict(num_gen=2000, slices='tri', nhood_size=5)
    assert metric_main.parse_metric('fid3d_medicalnet34').keywords == dict(num_gen=1000, depth=34)
    assert metric_main.parse_metric('mmd_full').keywords == dict(num_gen=None)
    assert metric_main.parse_metric('msssim_gen3k').keywords == dict(num_pairs=3000)

#----------------------------------------------------------------------------
# Slice-wise metrics and the cache.


class _CountingDetector:
    """Wraps the TorchScript detector and counts the slices it sees."""

    def __init__(self, detector):
        self.detector, self.rows = detector, 0

    def __call__(self, x, **kwargs):
        self.rows += x.shape[0]
        return self.detector(x, **kwargs)


def test_fid_uses_and_reuses_the_real_cache(setup, cache_dir, monkeypatch):
    counters = []
    real_get = metric_utils.get_detector

    def counting_get(url, device):
        counters.append(_CountingDetector(real_get(url, device)))
        return counters[-1]
    monkeypatch.setattr(metric_utils, 'get_detector', counting_get)

    first = _calc(setup, 'fid6_all')
    assert counters[-1].rows == 12 * SHAPE[0] + 6 * SHAPE[0]  # Every axial slice of 12 reals and 6 generated.
    files = glob.glob(str(cache_dir / 'gan-metrics' / 'reals-tinydet-*.npz'))
    assert len(files) == 1
    mtime = os.path.getmtime(files[0])

    second = _calc(setup, 'fid6_all')
    assert counters[-1].rows == 6 * SHAPE[0]  # Reals came from the cache.
    assert os.path.getmtime(files[0]) == mtime
    assert second.results == first.results and set(first.results) == {'fid6_all'}
    assert first.results.fid6_all > 0 and first.metric == 'fid6_all' and first.num_gpus == 1

    # The cached statistics are those of the detector on the real slices, computed here directly.
    volumes = np.stack([np.load(f) for f in sorted(glob.glob(os.path.join(setup['data'], '*.npy')))])
    slices = torch.from_numpy(volumes[:, 0].reshape(-1, 1, *SHAPE[1:]).astype(np.float32)).expand(-1, 3, -1, -1)
    features = fakes.TinyDetector()(slices, return_features=True).double().numpy()
    mean, cov = metric_utils.load_stats(files[0])[('axial', 0)].get_mean_cov()
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-5)
    np.testing.assert_allclose(cov, np.cov(features, rowvar=False, bias=True), rtol=1e-4, atol=1e-7)

    _calc(setup, 'fid6_all', cache=False)
    assert counters[-1].rows == 12 * SHAPE[0] + 6 * SHAPE[0]  # cache=False recomputes.


def test_repacked_dataset_gets_new_statistics(tmp_path, setup, cache_dir):
    G = setup['G']
    data = fakes.write_dataset(str(tmp_path / 'repacked'), fakes.sample_real_volumes(G, 4))
    kwargs = fakes.dataset_kwargs(data)
    first = _calc(setup, 'mmd4_full', dataset_kwargs=kwargs)
    _calc(setup, 'mmd4_full', dataset_kwargs=kwargs)
    assert len(glob.glob(str(cache_dir / 'gan-metrics' / 'repacked-voxels-*.npz'))) == 1
    fakes.write_dataset(data, fakes.sample_real_volumes(G, 4, seed=9) // 2)  # New contents, same path.
    info = os.stat(os.path.join(data, 'dataset.json'))
    os.utime(os.path.join(data, 'dataset.json'), ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    second = _calc(setup, 'mmd4_full', dataset_kwargs=kwargs)
    assert len(glob.glob(str(cache_dir / 'gan-metrics' / 'repacked-voxels-*.npz'))) == 2
    assert second.results.mmd4_full > first.results.mmd4_full  # Darker reals now: a clear shift.


def test_tri_kid_and_pr_keys(setup, cache_dir):
    kid = _calc(setup, 'kid6_tri').results
    assert set(kid) == {'kid6_tri', 'kid6_tri_axial', 'kid6_tri_coronal', 'kid6_tri_sagittal'}
    assert kid.kid6_tri == pytest.approx(np.mean([kid.kid6_tri_axial, kid.kid6_tri_coronal, kid.kid6_tri_sagittal]))
    pr = _calc(setup, 'pr63_mid').results
    assert set(pr) == {'pr63_mid_precision', 'pr63_mid_recall'}
    assert all(0 <= v <= 1 for v in pr.values())


def test_matching_generator_scores_better_than_a_shifted_one(setup, cache_dir):
    shifted = fakes.FakeGenerator(SHAPE, offset=1.0)
    assert _calc(setup, 'fid12_all').results.fid12_all < _calc(setup, 'fid12_all', G=shifted).results.fid12_all
    same = _calc(setup, 'mmd_full').results.mmd_full
    assert abs(same) < 0.05 < _calc(setup, 'mmd_full', G=shifted).results.mmd_full


def test_seed_makes_results_reproducible(setup, cache_dir):
    a = _calc(setup, 'mmd_full', seed=1)
    assert a.details['seed'] == 1 and a.details['num_gen_volumes'] == 12
    assert _calc(setup, 'mmd_full', seed=1).results == a.results
    assert _calc(setup, 'mmd_full', seed=2).results != a.results


def test_multichannel_conditional_uint16(tmp_path, setup, cache_dir):
    G = fakes.FakeGenerator(SHAPE, img_channels=2, c_dim=2)
    labels = [i % 2 for i in range(6)]
    onehot = np.eye(2, dtype=np.float32)[labels]
    volumes = fakes.sample_real_volumes(G, 6, labels=onehot).astype(np.uint16) * 257  # Full uint16 range.
    data = fakes.write_dataset(str(tmp_path / 'mc'), volumes, labels=labels, channels=['T2W', 'ADC'])
    result = _calc(setup, 'fid4_mid', G=G, dataset_kwargs=fakes.dataset_kwargs(data, use_labels=True))
    r = result.results
    assert set(r) == {'fid4_mid', 'fid4_mid_t2w', 'fid4_mid_adc'}
    assert r.fid4_mid == pytest.approx((r.fid4_mid_t2w + r.fid4_mid_adc) / 2)
    with pytest.raises(ValueError, match='c_dim=2'):
        _calc(setup, 'fid4_mid', G=G, dataset_kwargs=fakes.dataset_kwargs(data))  # Labels not loaded.


def test_generator_must_fit_the_dataset(setup, cache_dir):
    with pytest.raises(ValueError, match=r'shape \(D, H, W\) = \(4, 16, 16\)'):
        _calc(setup, 'mmd_full', G=fakes.FakeGenerator((4, 16, 16)))
    with pytest.raises(ValueError, match='class_name'):
        _calc(setup, 'mmd_full', dataset_kwargs=dict(path=setup['data']))

#----------------------------------------------------------------------------
# Detector-free and 3D metrics.


def test_msssim_of_a_constant_generator_is_one(setup, cache_dir):
    constant = fakes.FakeGenerator(SHAPE, scale=0.0, offset=0.3)  # Every volume is the same.
    r = _calc(setup, 'msssim_gen3', G=constant).results
    assert set(r) == {'msssim_gen3', 'msssim_gen3_real'}
    assert r.msssim_gen3 == pytest.approx(1.0, abs=1e-5)
    assert 0 <= r.msssim_gen3_real < 0.99
    assert _calc(setup, 'msssim_gen3').results.msssim_gen3 < 0.99


def test_fid3d_records_backbone_and_normalisation(tmp_path, setup, cache_dir):
    torch.manual_seed(0)
    weights = tmp_path / 'resnet_10_23dataset.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in medicalnet.MedicalNetResNet(10).state_dict().items()}},
               weights)
    result = _calc(setup, 'fid3d4_medicalnet10', medicalnet_url=str(weights))
    assert set(result.results) == {'fid3d4_medicalnet10'} and np.isfinite(result.results.fid3d4_medicalnet10)
    assert result.details['backbone'] == 'medicalnet-resnet10' and 'z-score' in result.details['normalisation']
    assert result.details['num_features'] == 512 and result.details['num_real_volumes'] == 12
    with pytest.raises(OSError, match='--medicalnet'):
        _calc(setup, 'fid3d4_medicalnet10')

#----------------------------------------------------------------------------
# Report.


def test_report_metric_appends_official_jsonl(tmp_path, capsys):
    result = dict(results={'fid3k_all': 1.5}, metric='fid3k_all', total_time=2.0, total_time_str='2s', num_gpus=1,
                  details=dict(seed=3))
    snapshot = tmp_path / 'network-snapshot-000100.pkl'
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(snapshot))
    metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl='/elsewhere/net.pkl')
    lines = (tmp_path / 'metric-fid3k_all.jsonl').read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert list(first)[:5] == ['results', 'metric', 'total_time', 'total_time_str', 'num_gpus']
    assert first['snapshot_pkl'] == 'network-snapshot-000100.pkl' and first['timestamp'] > 0
    assert json.loads(lines[1])['snapshot_pkl'] == '/elsewhere/net.pkl'
    assert capsys.readouterr().out.count('"fid3k_all": 1.5') == 2
