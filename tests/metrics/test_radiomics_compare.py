# SPDX-License-Identifier: Apache-2.0
"""The comparison statistics of radiomics.py and the feature curation."""

import math
import warnings

import numpy as np
import pytest
import scipy.stats

from metrics.radiomics import compare


def test_standardize_uses_the_real_mean_and_sample_std():
    real = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    z = compare.standardize(np.array([[7.0, 5.0]]), real)
    assert z[0, 0] == pytest.approx((7 - 3) / 2) and math.isnan(z[0, 1])  # Constant over the reals: NaN.
    assert np.isnan(compare.standardize(np.array([[np.nan, np.inf]]), real[:, :1].repeat(2, 1))).all()


def test_per_feature_statistics_are_scipys_on_standardised_values():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(10, 2, (40, 1)), rng.normal(11, 3, (30, 1))
    got = compare.compare(fake, real, ['f'])['per_feature']['f']
    zr, zf = (real[:, 0] - real.mean()) / real.std(ddof=1), (fake[:, 0] - real.mean()) / real.std(ddof=1)
    assert got['ks'] == pytest.approx(scipy.stats.ks_2samp(zf, zr).statistic)
    assert got['levene_p'] == pytest.approx(scipy.stats.levene(zf, zr).pvalue)
    assert got['wasserstein'] == pytest.approx(scipy.stats.wasserstein_distance(zf, zr))
    assert got['wasserstein'] == pytest.approx(scipy.stats.wasserstein_distance(fake[:, 0], real[:, 0]) /
                                               real.std(ddof=1))
    assert 0.9 < got['qq_spearman'] <= 1
    assert set(got) == set(compare.PER_FEATURE_KEYS)


def test_joint_statistics():
    rng = np.random.default_rng(1)
    real = rng.normal(0, 1, (50, 3))
    same = compare.compare(real, real, ['a', 'b', 'c'])['joint']
    assert same['mahalanobis'] == pytest.approx(0, abs=1e-12) and same['hotelling_p'] == pytest.approx(1)
    assert same['corr_frobenius'] == pytest.approx(0, abs=1e-12)
    fake = rng.normal(0, 1, (40, 3)) + [1.0, 0, 0]
    got = compare.compare(fake, real, ['a', 'b', 'c'])['joint']
    z_f = compare.standardize(fake, real)
    z_r = compare.standardize(real, real)
    pooled = (39 * np.cov(z_f, rowvar=False) + 49 * np.cov(z_r, rowvar=False)) / 88
    d = z_f.mean(0) - z_r.mean(0)
    d2 = d @ np.linalg.solve(pooled, d)
    assert got['mahalanobis'] == pytest.approx(math.sqrt(d2))
    t2 = 40 * 50 / 90 * d2
    assert got['hotelling_t2'] == pytest.approx(t2)
    assert got['hotelling_p'] == pytest.approx(scipy.stats.f.sf(t2 * 86 / (3 * 88), 3, 86))
    assert got['hotelling_p'] < 0.01
    assert got['corr_frobenius'] > 0


def test_degenerate_inputs_give_none_not_errors():
    real = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    fake = np.array([[1.0, 2.5], [1.0, np.nan], [1.0, 3.5]])
    out = compare.compare(fake, real, ['flat', 'x'])
    assert all(v is None for v in out['per_feature']['flat'].values())
    assert math.isfinite(out['per_feature']['x']['ks'])
    assert math.isfinite(out['joint']['hotelling_p'])  # On the usable feature and the complete volumes.
    assert out['joint']['features'] == 1 and out['reason'] is None and out['joint']['reason'] is None
    one = compare.compare(fake[:1], real, ['flat', 'x'], 'fake')
    assert one['reason'] == 'the comparison needs at least 2 volumes in each group: 3 real, 1 fake'
    assert all(v is None for v in one['per_feature']['x'].values()) and one['joint']['mahalanobis'] is None


def test_fewer_volumes_than_features_leave_mahalanobis_and_hotelling_undefined():
    rng = np.random.default_rng(0)
    many = compare.compare(rng.normal(size=(3, 5)), rng.normal(size=(3, 5)), list('abcde'), 'fake')['joint']
    assert many['mahalanobis'] is None and many['hotelling_t2'] is None and many['hotelling_p'] is None
    assert many['reason'].startswith('fewer volumes than features: 3 real and 3 fake volumes give the pooled '
                                     'covariance 4 degrees of freedom for 5 features, so it is singular')
    assert math.isfinite(many['corr_frobenius'])
    enough = compare.compare(rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), list('abcd'))['joint']
    assert math.isfinite(enough['hotelling_p']) and enough['reason'] is None  # N + M - 2 = F: invertible.


def test_an_exactly_repeated_feature_counts_once():
    # firstorder Energy and TotalEnergy differ by a constant factor on one voxel size: the pooled covariance is
    # singular, and the test must equal the one without the copy (F degrees of freedom = its rank).
    rng = np.random.default_rng(3)
    real, fake = rng.normal(0, 1, (30, 2)), rng.normal(0.5, 1, (25, 2))
    copy = lambda x: np.concatenate([x, 3.0 * x[:, :1]], axis=1)  # noqa: E731
    plain = compare.compare(fake, real, ['a', 'b'])['joint']
    repeated = compare.compare(copy(fake), copy(real), ['a', 'b', 'three_a'])['joint']
    for key in ('mahalanobis', 'hotelling_t2', 'hotelling_p'):
        assert repeated[key] == pytest.approx(plain[key], rel=1e-9)


@pytest.mark.parametrize('mean, noise, constant', [
    (100.0, 1e-13, True),     # Rounding noise on a value of 100.
    (3e10, 1e-3, True),       # Energy-sized: 3e-14 relative.
    (1e-15, 1e-13, True),     # Noise around a true 0.
    (100.0, 1e-5, False),     # 1e-7 relative: a real, if tiny, variation.
    (0.0, 1e-6, False),
    (0.02, 0.003, False),
])
def test_a_feature_is_constant_when_its_sd_is_below_1e9_of_its_size(mean, noise, constant):
    column = mean + noise * np.array([-1.0, 0.5, 1.0, -0.5, 0.0, np.nan])
    real = np.stack([column, np.arange(6.0)], axis=1)
    assert compare.constant_columns(real).tolist() == [constant, False]
    z = compare.standardize(real, real)
    assert np.isnan(z[:, 0]).all() == constant and np.isfinite(z[:5, 1]).all()


def test_nothing_computable_warns_nothing():
    real = np.full((4, 2), np.nan)
    real[0] = [1.0, 2.0]
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        count, mean, std = compare.column_stats(real)
        z = compare.standardize(real, real)
        out = compare.compare(real, real, ['a', 'b'])
    assert count.tolist() == [1, 1] and mean.tolist() == [1.0, 2.0] and np.isnan(std).all() and np.isnan(z).all()
    assert out['joint']['reason'] == 'no feature varies over the reals'
    assert np.isnan(compare.column_stats(np.full((3, 1), np.nan))[1]).all()


def test_select_features_drops_variable_constant_and_redundant_features():
    rng = np.random.default_rng(2)
    a = rng.normal(100, 5, 60)
    data = np.stack([a, 2 * a + rng.normal(0, 0.01, 60), rng.normal(100, 5, 60), rng.normal(1, 3, 60),
                     np.full(60, 4.0)], axis=1)
    out = compare.select_features(data, ['a', 'twice_a', 'b', 'noisy', 'flat'], max_cv=1.0, max_rho=0.9)
    assert out['dropped_cv'].keys() == {'noisy'} and out['dropped_constant'] == ['flat']
    assert len(out['dropped_rho']) == 1 and set(out['kept']) in ({'a', 'b'}, {'twice_a', 'b'})
    dropped, (partner, rho) = next(iter(out['dropped_rho'].items()))
    assert {dropped, partner} == {'a', 'twice_a'} and rho > 0.99
