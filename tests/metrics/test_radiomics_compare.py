# SPDX-License-Identifier: Apache-2.0
"""The comparison statistics of radiomics.py and the feature curation."""

import math

import numpy as np
import pytest
import scipy.stats

from metrics.radiomics import compare


def test_standardize_uses_the_real_mean_and_sample_std():
    real = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    z = compare.standardize(np.array([[7.0, 5.0]]), real)
    assert z[0, 0] == pytest.approx((7 - 3) / 2) and math.isnan(z[0, 1])  # Constant over the reals: NaN.


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


def test_degenerate_inputs_give_nan_not_errors():
    real = np.array([[1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    fake = np.array([[1.0, 2.5], [1.0, np.nan], [1.0, 3.5]])
    out = compare.compare(fake, real, ['flat', 'x'])
    assert all(math.isnan(v) for v in out['per_feature']['flat'].values())
    assert math.isfinite(out['per_feature']['x']['ks'])
    assert math.isfinite(out['joint']['hotelling_p'])  # On the usable feature and the complete volumes.
    many = compare.compare(np.random.default_rng(0).normal(size=(3, 5)), np.random.default_rng(1).normal(size=(3, 5)),
                           list('abcde'))
    assert math.isnan(many['joint']['hotelling_p']) and math.isfinite(many['joint']['mahalanobis'])  # F >= N + M - 1.
    with pytest.raises(ValueError, match='at least 2'):
        compare.compare(fake[:1], real, ['flat', 'x'])


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
