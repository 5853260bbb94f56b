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
from tests.helpers import detectors

SHAPE = (8, 16, 16)


@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp('metrics')
    G = detectors.FakeGenerator(SHAPE)
    data = detectors.write_dataset(str(root / 'reals'), detectors.sample_real_volumes(G, 12))
    detector = detectors.write_detector(root / 'tinydet.pt')
    vgg16 = detectors.write_detector(root / 'tinyvgg.pt', num_features=7, seed=1)  # Another detector for P/R.
    return dict(G=G, data=data, detector=detector, vgg16=vgg16, root=root)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'cache'))
    return tmp_path / 'cache'


def _calc(setup, metric, G=None, **kwargs):
    kwargs.setdefault('dataset_kwargs', detectors.dataset_kwargs(setup['data']))
    return metric_main.calc_metric(metric, G=G if G is not None else setup['G'], inception_url=setup['detector'],
                                   vgg16_url=setup['vgg16'], seed=kwargs.pop('seed', 0), **kwargs)

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


@pytest.mark.parametrize('name, module, fn, kwargs', [
    ('fid3k_all', 'frechet_inception_distance', 'compute_fid', dict(num_gen=3000, slices='all')),
    ('fid3k_mid', 'frechet_inception_distance', 'compute_fid', dict(num_gen=3000, slices='mid')),
    ('fid3k_tri', 'frechet_inception_distance', 'compute_fid', dict(num_gen=3000, slices='tri')),
    ('fid50k_mid', 'frechet_inception_distance', 'compute_fid', dict(num_gen=50000, slices='mid')),
    ('kid3k_all', 'kernel_inception_distance', 'compute_kid', dict(num_gen=3000, slices='all')),
    ('pr3k3_all', 'precision_recall', 'compute_pr', dict(num_gen=3000, slices='all', nhood_size=3)),
    ('pr3k3_tri', 'precision_recall', 'compute_pr', dict(num_gen=3000, slices='tri', nhood_size=3)),
    ('fid3d_medicalnet10', 'fid3d', 'compute_fid3d', dict(num_gen=1000, depth=10)),
    ('msssim_gen1k', 'ms_ssim', 'compute_msssim', dict(num_pairs=1000)),
    ('mmd_full', 'mmd', 'compute_mmd', dict(num_gen=None)),
])
def test_registered_names_run_their_settings(name, module, fn, kwargs, monkeypatch):
    import importlib
    calls = []
    monkeypatch.setattr(importlib.import_module(f'metrics.{module}'), fn,
                        lambda opts, **kw: calls.append(kw) or ({'': 1.0}, {}))
    result = metric_main.calc_metric(name, seed=0)
    assert calls == [kwargs] and result.results == {name: 1.0}


def test_the_registry_describes_every_family_once():
    text = metric_main.describe_metrics()
    assert len(text.splitlines()) == len(metric_main.FAMILIES) and 'fid<N>_<mid|tri|all>' in text
    assert all(metric_main.is_valid_metric(name) for name in metric_main.list_valid_metrics())


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

    def counting_get(url, device, what='detector'):
        counters.append(_CountingDetector(real_get(url, device, what)))
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
    slices = torch.from_numpy(volumes[:, 0].reshape(-1, 1, *SHAPE[1:])).expand(-1, 3, -1, -1)  # uint8 grey as RGB
    features = detectors.TinyDetector()(slices, return_features=True).double().numpy()
    mean, cov = metric_utils.load_stats(files[0])[('axial', 0)].get_mean_cov()
    np.testing.assert_allclose(mean, features.mean(0), rtol=1e-5)
    np.testing.assert_allclose(cov, np.cov(features, rowvar=False, bias=True), rtol=1e-4, atol=1e-7)

    _calc(setup, 'fid6_all', cache=False)
    assert counters[-1].rows == 12 * SHAPE[0] + 6 * SHAPE[0]  # cache=False recomputes.


def test_cache_is_keyed_by_dataset_detector_and_options(tmp_path, setup, cache_dir):
    def cache_files():
        return sorted(os.path.basename(f) for f in glob.glob(str(cache_dir / 'gan-metrics' / '*.npz')))
    other = detectors.write_dataset(str(tmp_path / 'other'), detectors.sample_real_volumes(setup['G'], 4, seed=3))
    runs = [dict(metric='fid4_all'),
            dict(metric='fid4_mid'),  # Another slice strategy.
            dict(metric='kid4_all'),  # Other statistics (every row instead of mean and covariance).
            dict(metric='fid4_all', dataset_kwargs=detectors.dataset_kwargs(other)),  # Another dataset.
            dict(metric='fid4_all', inception_url=setup['vgg16'])]  # Another detector.
    for i, run in enumerate(runs):
        kwargs = dict(run)
        metric = kwargs.pop('metric')
        if 'inception_url' in kwargs:
            metric_main.calc_metric(metric, G=setup['G'], dataset_kwargs=detectors.dataset_kwargs(setup['data']),
                                    seed=0, **kwargs)
        else:
            _calc(setup, metric, **kwargs)
        assert len(cache_files()) == i + 1, run
    names = cache_files()
    assert sum(n.startswith('reals-tinydet-') for n in names) == 3 and sum(n.startswith('other-') for n in names) == 1
    assert sum(n.startswith('reals-tinyvgg-') for n in names) == 1
    for run in runs[:4]:  # Every one of them is found again.
        kwargs = dict(run)
        _calc(setup, kwargs.pop('metric'), **kwargs)
    assert cache_files() == names


def test_repacked_dataset_gets_new_statistics(tmp_path, setup, cache_dir):
    G = setup['G']
    data = detectors.write_dataset(str(tmp_path / 'repacked'), detectors.sample_real_volumes(G, 4))
    kwargs = detectors.dataset_kwargs(data)
    first = _calc(setup, 'mmd4_full', dataset_kwargs=kwargs)
    _calc(setup, 'mmd4_full', dataset_kwargs=kwargs)
    assert len(glob.glob(str(cache_dir / 'gan-metrics' / 'repacked-voxels-*.npz'))) == 1
    detectors.write_dataset(data, detectors.sample_real_volumes(G, 4, seed=9) // 2)  # New contents, same path.
    info = os.stat(os.path.join(data, 'dataset.json'))
    os.utime(os.path.join(data, 'dataset.json'), ns=(info.st_atime_ns, info.st_mtime_ns + 10**9))
    second = _calc(setup, 'mmd4_full', dataset_kwargs=kwargs)
    assert len(glob.glob(str(cache_dir / 'gan-metrics' / 'repacked-voxels-*.npz'))) == 2
    assert second.results.mmd4_full > first.results.mmd4_full  # Darker reals now: a clear shift.


def test_tri_kid_and_pr_keys_and_detectors(setup, cache_dir):
    kid = _calc(setup, 'kid6_tri')
    r = kid.results
    assert set(r) == {'kid6_tri', 'kid6_tri_axial', 'kid6_tri_coronal', 'kid6_tri_sagittal'}
    assert r.kid6_tri == pytest.approx(np.mean([r.kid6_tri_axial, r.kid6_tri_coronal, r.kid6_tri_sagittal]))
    assert kid.details['detector'] == setup['detector']  # Inception.
    assert kid.details['num_subsets'] == 100 and kid.details['max_subset_size'] == 1000
    pr = _calc(setup, 'pr63_mid')
    assert set(pr.results) == {'pr63_mid_precision', 'pr63_mid_recall'}
    assert all(0 <= v <= 1 for v in pr.results.values())
    assert pr.details['detector'] == setup['vgg16'] and pr.details['nhood_size'] == 3
    vgg_stats = glob.glob(str(cache_dir / 'gan-metrics' / 'reals-tinyvgg-*.npz'))  # 7-wide VGG16 stand-in rows.
    assert len(vgg_stats) == 1 and metric_utils.load_stats(vgg_stats[0])[('axial', 0)].get_all().shape == (12, 7)


def test_matching_generator_scores_better_than_a_shifted_one(setup, cache_dir):
    shifted = detectors.FakeGenerator(SHAPE, offset=1.0)
    assert _calc(setup, 'fid12_all').results.fid12_all < _calc(setup, 'fid12_all', G=shifted).results.fid12_all
    same = _calc(setup, 'mmd_full').results.mmd_full
    assert abs(same) < 0.05 < _calc(setup, 'mmd_full', G=shifted).results.mmd_full


def test_seed_makes_results_reproducible(setup, cache_dir):
    a = _calc(setup, 'mmd_full', seed=1)
    assert a.details['seed'] == 1 and a.details['num_gen_volumes'] == 12
    assert _calc(setup, 'mmd_full', seed=1).results == a.results
    assert _calc(setup, 'mmd_full', seed=2).results != a.results


def test_multichannel_conditional_uint16(tmp_path, setup, cache_dir):
    G = detectors.FakeGenerator(SHAPE, img_channels=2, c_dim=2)
    labels = [i % 2 for i in range(6)]
    onehot = np.eye(2, dtype=np.float32)[labels]
    volumes = detectors.sample_real_volumes(G, 6, labels=onehot).astype(np.uint16) * 257  # Full uint16 range.
    data = detectors.write_dataset(str(tmp_path / 'mc'), volumes, labels=labels, channels=['T2W', 'ADC'])
    result = _calc(setup, 'fid4_mid', G=G, dataset_kwargs=detectors.dataset_kwargs(data, use_labels=True))
    r = result.results
    assert set(r) == {'fid4_mid', 'fid4_mid_t2w', 'fid4_mid_adc'}
    assert r.fid4_mid == pytest.approx((r.fid4_mid_t2w + r.fid4_mid_adc) / 2)
    with pytest.raises(ValueError, match='c_dim=2'):
        _calc(setup, 'fid4_mid', G=G, dataset_kwargs=detectors.dataset_kwargs(data))  # Labels not loaded.


class _OneChannel(torch.nn.Module):
    """Channel c of a multi-channel generator, as a 1-channel generator."""

    def __init__(self, G, c):
        super().__init__()
        self.G, self.c = G, c
        self.z_dim, self.c_dim, self.img_shape, self.img_channels = G.z_dim, G.c_dim, G.img_shape, 1

    def forward(self, z, c, **kwargs):
        return self.G(z, c, **kwargs)[:, self.c:self.c + 1]


@pytest.mark.parametrize('metric', ['fid4_tri', 'kid4_mid', 'mmd_full'])
def test_multichannel_values_are_the_single_channel_values(tmp_path, setup, cache_dir, metric):
    # Each sequence is measured on its own: the T2W value of a 2-channel run is the value of a run on T2W alone.
    G = detectors.FakeGenerator(SHAPE, img_channels=2)
    volumes = detectors.sample_real_volumes(G, 6, seed=4)
    both = _calc(setup, metric, G=G, seed=3, dataset_kwargs=detectors.dataset_kwargs(
        detectors.write_dataset(str(tmp_path / 'both'), volumes, channels=['T2W', 'ADC']))).results
    per_channel = []
    for c, name in enumerate(['t2w', 'adc']):
        data = detectors.write_dataset(str(tmp_path / name), volumes[:, c:c + 1])
        alone = _calc(setup, metric, G=_OneChannel(G, c), seed=3, dataset_kwargs=detectors.dataset_kwargs(data)).results
        per_channel.append(alone[metric])
        for key, value in alone.items():  # With 'tri' also each plane of that channel.
            assert both[f'{key}_{name}'] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert both[metric] == pytest.approx(np.mean(per_channel))
    assert per_channel[0] != pytest.approx(per_channel[1])
    if metric == 'fid4_tri':
        coronal = [both['fid4_tri_coronal_t2w'], both['fid4_tri_coronal_adc']]
        assert both['fid4_tri_coronal'] == pytest.approx(np.mean(coronal))  # Each plane over the sequences.


def test_generator_must_fit_the_dataset(setup, cache_dir):
    with pytest.raises(ValueError, match=r'shape \(D, H, W\) = \(4, 16, 16\)'):
        _calc(setup, 'mmd_full', G=detectors.FakeGenerator((4, 16, 16)))
    with pytest.raises(ValueError, match='class_name'):
        _calc(setup, 'mmd_full', dataset_kwargs=dict(path=setup['data']))

#----------------------------------------------------------------------------
# Detector-free and 3D metrics.


def test_msssim_of_a_constant_generator_is_one(setup, cache_dir):
    constant = detectors.FakeGenerator(SHAPE, scale=0.0, offset=0.3)  # Every volume is the same.
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


def _zip_folder(folder: str, dest: str) -> str:
    import zipfile
    with zipfile.ZipFile(dest, 'w', compression=zipfile.ZIP_STORED) as z:
        for name in sorted(os.listdir(folder)):
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), open(os.path.join(folder, name),
                                                                                     'rb').read())
    return dest


def _replace_keeping_size_and_mtime(src: str, dest: str) -> None:
    """Copy src over dest as `cp` would with the old timestamps restored: same path, same size, same mtime."""
    import shutil
    before = os.stat(dest)
    assert os.path.getsize(src) == before.st_size
    shutil.copyfile(src, dest)
    os.utime(dest, ns=(before.st_atime_ns, before.st_mtime_ns))


def test_a_file_replaced_at_the_same_path_with_the_same_size_and_mtime_is_measured_anew(tmp_path, setup, cache_dir):
    # Regression: the cache was keyed by path, size and mtime, so these replacements reused stale statistics.
    G = setup['G']
    zips = [_zip_folder(detectors.write_dataset(str(tmp_path / f'src{i}'),
                                                detectors.sample_real_volumes(G, 6, seed=i + 1) // (i + 1)),
                        str(tmp_path / f'reals{i}.zip')) for i in range(2)]
    kwargs = detectors.dataset_kwargs(zips[0])
    first = _calc(setup, 'fid6_mid', dataset_kwargs=kwargs)
    assert _calc(setup, 'fid6_mid', dataset_kwargs=kwargs).results == first.results  # A cache hit: same value.
    _replace_keeping_size_and_mtime(zips[1], zips[0])
    darker = _calc(setup, 'fid6_mid', dataset_kwargs=kwargs)
    assert darker.results.fid6_mid > 2 * first.results.fid6_mid  # 49.8 against 15.8.
    assert darker.details['inputs']['dataset']['sha256'] != first.details['inputs']['dataset']['sha256']

    os.makedirs(tmp_path / 'other')
    other = detectors.write_detector(tmp_path / 'other' / 'det.pt', seed=5)  # The same name, so the same size.
    detector = str(tmp_path / 'det.pt')
    detectors.write_detector(detector, seed=0)
    with_first = _calc(dict(setup, detector=detector), 'fid6_mid', dataset_kwargs=kwargs)
    _replace_keeping_size_and_mtime(other, detector)
    with_other = _calc(dict(setup, detector=detector), 'fid6_mid', dataset_kwargs=kwargs)
    assert with_other.results != with_first.results
    assert len(glob.glob(str(cache_dir / 'gan-metrics' / 'reals0-det-*.npz'))) == 2
    inputs = with_other.details['inputs']
    assert inputs['det']['sha256'] != with_first.details['inputs']['det']['sha256']
    assert inputs['det']['path'] == detector and inputs['dataset']['of'] == 'zip member list with CRC-32s'
