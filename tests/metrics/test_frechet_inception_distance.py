# SPDX-License-Identifier: Apache-2.0
"""FID against closed forms and a direct NumPy computation."""

import numpy as np
import pytest
import scipy.linalg

from metrics import metric_utils
from metrics.frechet_inception_distance import frechet_distance


def _direct_fid(x: np.ndarray, y: np.ndarray) -> float:
    # Tr sqrtm(S1 S2) = sum of sqrt(eigenvalues of S1 S2), which are real and non-negative for SPD S1, S2.
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    eig = np.linalg.eigvals(s1 @ s2).real.clip(min=0)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum())


def _stats(x: np.ndarray, chunk: int = 97) -> metric_utils.FeatureStats:
    stats = metric_utils.FeatureStats(capture_mean_cov=True)
    for start in range(0, len(x), chunk):
        stats.append(x[start:start + chunk])
    return stats


def test_fid_of_known_gaussians_matches_closed_form():
    # Diagonal covariances: FID = |mu1 - mu2|^2 + sum (sigma1 - sigma2)^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([0.5, 1.0, 0.0])
    var1, var2 = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 0.25])
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(var1) - np.sqrt(var2)) ** 2)
    assert frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2)) == pytest.approx(want, rel=1e-10)


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(w.clip(min=0))) @ v.T


def test_fid_of_gaussians_with_full_covariances_matches_closed_form():
    # The Frechet (2-Wasserstein) distance of N(m1, S1) and N(m2, S2) is
    # |m1 - m2|^2 + Tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), a symmetric form the implementation does not use.
    rng = np.random.RandomState(5)
    a, b = rng.randn(6, 6), rng.randn(6, 6)
    s1, s2 = a @ a.T + 0.1 * np.eye(6), b @ b.T + 0.1 * np.eye(6)  # Random SPD, not commuting.
    m1, m2 = rng.randn(6), rng.randn(6)
    root1 = scipy.linalg.sqrtm(s1).real
    want = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * _psd_sqrt(root1 @ s2 @ root1))
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-9)
    assert frechet_distance(m2, s2, m1, s1) == pytest.approx(want, rel=1e-9)
    # Covariances sharing eigenvectors: the distance of the square roots of their eigenvalues.
    q = np.linalg.qr(rng.randn(3, 3))[0]
    e1, e2 = np.array([9.0, 1.0, 0.25]), np.array([4.0, 4.0, 1.0])
    cov1, cov2 = q @ np.diag(e1) @ q.T, q @ np.diag(e2) @ q.T
    assert frechet_distance(np.zeros(3), cov1, np.ones(3), cov2) == pytest.approx(3 + 1 + 1 + 0.25, rel=1e-9)


def test_fid_from_feature_stats_matches_direct_numpy():
    rng = np.random.RandomState(0)
    a = rng.randn(8, 8)
    x = rng.randn(2000, 8) @ a
    y = rng.randn(1500, 8) @ (a + 0.3 * rng.randn(8, 8)) + np.linspace(-1, 1, 8)
    got = frechet_distance(*_stats(x).get_mean_cov(), *_stats(y).get_mean_cov())
    assert got == pytest.approx(_direct_fid(x, y), rel=1e-8)


def test_fid_of_mean_shift_is_squared_shift():
    rng = np.random.RandomState(1)
    shift = np.array([1.0, -0.5, 0.25, 0.0])
    x, y = rng.randn(50000, 4), rng.randn(50000, 4)
    x, y = x - x.mean(0), y - y.mean(0) + shift  # Exact sample means; only the covariances carry sampling noise.
    got = frechet_distance(*_stats(x, 5000).get_mean_cov(), *_stats(y, 5000).get_mean_cov())
    assert got == pytest.approx(np.sum(shift ** 2), abs=0.005)


def test_fid_of_a_set_with_itself_is_zero():
    x = np.random.RandomState(2).randn(300, 16)
    mu, sigma = _stats(x).get_mean_cov()
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-8


def test_fid_with_singular_covariances_is_finite():
    x = np.random.RandomState(3).randn(5, 12)  # Fewer samples than features: rank-deficient covariances.
    y = np.random.RandomState(4).randn(5, 12) + 1
    value = frechet_distance(*_stats(x).get_mean_cov(), *_stats(y).get_mean_cov())
    assert np.isfinite(value) and value > 0
    with pytest.raises(ValueError, match='mismatched'):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
