# SPDX-License-Identifier: Apache-2.0
"""metric_utils: feature statistics, slices, conversions, rank dealing, view keys, detectors and the stats cache."""

import os

import numpy as np
import pytest
import torch

import dnnlib
from metrics import metric_utils
from tests.helpers import detectors

#----------------------------------------------------------------------------
# FeatureStats.


def test_feature_stats_mean_cov_match_numpy():
    x = np.random.RandomState(0).randn(100, 6) * [1, 2, 3, 4, 5, 6] + 10
    stats = metric_utils.FeatureStats(capture_mean_cov=True, max_items=70)
    for start in range(0, 100, 17):
        stats.append(x[start:start + 17])
    assert stats.is_full() and stats.num_items == 70
    mean, cov = stats.get_mean_cov()
    np.testing.assert_allclose(mean, x[:70].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(x[:70], rowvar=False, bias=True), rtol=1e-9, atol=1e-9)


def test_feature_stats_all_and_sqnorm():
    x = torch.randn(30, 5, dtype=torch.float64)
    stats = metric_utils.FeatureStats(capture_all=True, capture_mean_sqnorm=True)
    stats.append(x[:11])
    stats.append(x[11:])
    assert not stats.is_full()
    np.testing.assert_allclose(stats.get_all(), x.float().numpy())
    mean, sqnorm = stats.get_mean_sqnorm()
    np.testing.assert_allclose(mean, x.mean(0).numpy(), rtol=1e-12)
    assert sqnorm == pytest.approx(float(x.square().sum(1).mean()), rel=1e-12)
    with pytest.raises(ValueError, match='covariance'):
        stats.get_mean_cov()
    with pytest.raises(ValueError, match='width 4'):
        stats.append(torch.zeros(2, 4))


def test_append_torch_flattens_volume_rows_in_order():
    stats = metric_utils.FeatureStats(capture_all=True, max_items=5)
    x = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)  # [N=2 volumes, S=3 slices, F=2]
    stats.append_torch(x)
    np.testing.assert_array_equal(stats.get_all(), x.reshape(6, 2)[:5].numpy())


def test_stats_save_load_round_trip(tmp_path):
    x = torch.randn(20, 3)
    a = metric_utils.FeatureStats(capture_mean_cov=True)
    b = metric_utils.FeatureStats(capture_all=True, capture_mean_sqnorm=True)
    a.append(x)
    b.append(x * 2)
    path = str(tmp_path / 'stats.npz')
    metric_utils.save_stats(path, {('axial', 0): a, ('coronal', 1): b})
    assert os.listdir(tmp_path) == ['stats.npz']  # No temporary file left behind.
    loaded = metric_utils.load_stats(path)
    assert list(loaded) == [('axial', 0), ('coronal', 1)]
    for got, want in zip(loaded[('axial', 0)].get_mean_cov(), a.get_mean_cov()):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(loaded[('coronal', 1)].get_all(), b.get_all())
    assert loaded[('coronal', 1)].get_mean_sqnorm()[1] == b.get_mean_sqnorm()[1]
    assert loaded[('axial', 0)].is_full()

#----------------------------------------------------------------------------
# Slices and conversions.


def _indexed_volumes(N=2, C=2, D=5, H=6, W=7):
    # Every voxel holds a distinct code of its (n, c, d, h, w) index.
    n, c, d, h, w = np.meshgrid(*[np.arange(s) for s in (N, C, D, H, W)], indexing='ij')
    return torch.from_numpy((n * 10000 + c * 1000 + d * 100 + h * 10 + w).astype(np.float32))


@pytest.mark.parametrize('D', [5, 6])
def test_slice_strategies(D):
    x = _indexed_volumes(D=D)
    N, C, _, H, W = x.shape
    mid = metric_utils.extract_slices(x, 'mid', channel=1)
    assert list(mid) == ['axial'] and mid['axial'].shape == (N, 1, H, W)
    assert torch.equal(mid['axial'][:, 0], x[:, 1, D // 2])
    every = metric_utils.extract_slices(x, 'all', channel=0)
    assert every['axial'].shape == (N, D, H, W) and torch.equal(every['axial'], x[:, 0])
    tri = metric_utils.extract_slices(x, 'tri', channel=1)
    assert {k: tuple(v.shape) for k, v in tri.items()} == dict(axial=(N, 1, H, W), coronal=(N, 1, D, W),
                                                              sagittal=(N, 1, D, H))
    # Upright: the slice axis runs towards superior, so the last slice is the top row.
    assert torch.equal(tri['coronal'][:, 0], x[:, 1, :, H // 2, :].flip(1))
    assert torch.equal(tri['sagittal'][:, 0], x[:, 1, :, :, W // 2].flip(1))
    assert metric_utils.slices_per_volume('all', (D, H, W)) == D
    assert metric_utils.slices_per_volume('tri', (D, H, W)) == 1
    with pytest.raises(ValueError, match='slice strategy'):
        metric_utils.extract_slices(x, 'full')


def test_conversions():
    fake = metric_utils.fake_to_uint8_range(torch.tensor([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0]))
    assert fake.tolist() == [0, 0, 64, 128, 255, 255, 255]  # floor(x * 127.5 + 128), clamped.
    real = metric_utils.real_to_uint8_range(torch.tensor([0, 257, 65535], dtype=torch.int32), 65535)
    np.testing.assert_allclose(real.numpy(), [0, 1, 255], rtol=1e-6)
    assert metric_utils.real_to_uint8_range(torch.tensor([7]), 255).item() == 7
    np.testing.assert_allclose(metric_utils.uint8_range_to_unit(torch.tensor([0.0, 255.0])).numpy(), [-1, 1])


def test_rank_items_deal_and_interleave_restore_order():
    ranks = [metric_utils.rank_items(5, 2, r) for r in range(2)]
    assert ranks == [[0, 2, 4], [1, 3, 0]]
    interleaved = [i for pair in zip(*ranks) for i in pair]  # What all_gather_interleaved produces.
    assert interleaved[:5] == [0, 1, 2, 3, 4]
    assert metric_utils.rank_items(3, 1, 0) == [0, 1, 2]


def test_view_keys_and_combine():
    names = ['t2w', 'adc']
    values = {('axial', 0): 1.0, ('coronal', 0): 2.0, ('axial', 1): 3.0, ('coronal', 1): 6.0}
    out = metric_utils.combine_views(values, names)
    assert out == {'': 3.0, 'axial_t2w': 1.0, 'coronal_t2w': 2.0, 'axial_adc': 3.0, 'coronal_adc': 6.0,
                   'axial': 2.0, 'coronal': 4.0, 't2w': 1.5, 'adc': 4.5}  # Plus the mean per plane and per channel.
    assert metric_utils.combine_views({('axial', 0): 4.0}, names, prefix='recall') == {'recall': 4.0}
    assert metric_utils.combine_views({('volume', 0): 1.0, ('volume', 1): 2.0}, names) == \
        {'': 1.5, 't2w': 1.0, 'adc': 2.0}

#----------------------------------------------------------------------------
# Detectors.


def test_detectors_default_to_the_official_urls():
    base = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/'
    urls = metric_utils.MetricOptions(seed=0, detector_urls=dict(vgg16='/local/vgg16.pt', inception=None)).detector_urls
    assert urls.inception == base + 'inception-2015-12-05.pt' and urls.vgg16 == '/local/vgg16.pt'
    assert metric_utils.MetricOptions(seed=0).detector_urls.vgg16 == base + 'vgg16.pt'
    assert metric_utils.MetricOptions(seed=0).detector_urls.medicalnet is None  # No public single-file URL.
    assert metric_utils.detector_name(base + 'inception-2015-12-05.pt') == 'inception-2015-12-05'


def test_offline_detector_error_is_one_line_naming_url_and_folder():
    url = 'http://127.0.0.1:9/metrics/inception-2015-12-05.pt'  # Port 9: nothing listens, fails at once.
    with pytest.raises(OSError) as info:
        metric_utils.get_detector(url, 'cpu')
    message = str(info.value)
    assert '\n' not in message and url in message
    assert os.path.dirname(dnnlib.util.url_cache_path(url)) in message


def test_detector_file_errors(tmp_path):
    with pytest.raises(OSError, match='No such file'):
        metric_utils.get_detector(str(tmp_path / 'missing.pt'), 'cpu')
    bad = tmp_path / 'bad.pt'
    bad.write_bytes(b'not a torchscript archive')
    with pytest.raises(ValueError, match='not a TorchScript file') as info:
        metric_utils.get_detector(str(bad), 'cpu')
    assert '\n' not in str(info.value)


@pytest.mark.slow
def test_slice_featurizer_feeds_grey_rgb_in_uint8_range(tmp_path):
    path = detectors.write_detector(tmp_path / 'det.pt', num_features=5)
    featurizer = metric_utils.SliceFeaturizer(path, dict(return_features=True), 'tri', torch.device('cpu'),
                                              batch_slices=3)
    assert metric_utils.get_detector(path, 'cpu') is featurizer.detector  # Cached per (url, device).
    assert featurizer.name == 'det'
    volumes = torch.randint(0, 256, [4, 2, 6, 8, 10]).float()
    features = featurizer(volumes)  # The detector itself asserts 3 equal channels in [0, 255].
    assert set(features) == {(p, c) for c in range(2) for p in ('axial', 'coronal', 'sagittal')}
    assert all(f.shape == (4, 1, 5) for f in features.values())
    detector = detectors.TinyDetector(5)
    coronal = volumes[:, 1, :, 4].flip(1)  # [N, D, W], upright: the top row is the last slice.
    want = detector(coronal[:, None].expand(-1, 3, -1, -1).to(torch.uint8), return_features=True)
    torch.testing.assert_close(features[('coronal', 1)][:, 0], want)
    every = metric_utils.SliceFeaturizer(path, dict(return_features=True), 'all', torch.device('cpu'))(volumes)
    assert every[('axial', 0)].shape == (4, 6, 5)


def test_slices_reach_the_detector_as_rounded_uint8(tmp_path):
    # uint16 reals land between the 256 levels (value * 255 / 65535); they are rounded as the 8-bit cast of the
    # generated volumes rounds the same [-1, 1] value.
    featurizer = metric_utils.SliceFeaturizer(detectors.write_detector(tmp_path / 'det.pt'), dict(return_features=True),
                                              'mid', torch.device('cpu'))
    seen = []
    featurizer.detector = lambda x, **kwargs: seen.append(x) or torch.zeros([x.shape[0], 2])
    volumes = torch.tensor([0.2, 100.4, 100.6, 254.7]).reshape(1, 1, 1, 2, 2)  # [N, C, D, H, W]
    featurizer(volumes)
    assert seen[0].dtype == torch.uint8 and seen[0].shape == (1, 3, 2, 2)
    assert seen[0][0, 2].flatten().tolist() == [0, 100, 101, 255]
    values = torch.arange(0, 65536, 97, dtype=torch.float64)
    stored = metric_utils.real_to_uint8_range(values, 65535)
    generated = metric_utils.fake_to_uint8_range(values / 65535 * 2 - 1)  # The same values in [-1, 1].
    away_from_ties = ((stored % 1) - 0.5).abs() > 1e-3
    assert torch.equal(stored.round()[away_from_ties], generated[away_from_ties].double())
