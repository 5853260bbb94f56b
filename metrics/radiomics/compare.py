# SPDX-License-Identifier: Apache-2.0
"""Comparing radiomics features of two sets of volumes (real vs synthetic, real vs real), as the prostate
3D-StyleGAN2-ADA paper did, with scipy.stats.

All features are first standardised by the real set (its mean and sample standard deviation), so distances are
in units of the real set's spread. Per feature: the two-sample Kolmogorov-Smirnov test, Levene's test of equal
variances (scipy's default, centred on the median: the Brown-Forsythe variant), the 1-Wasserstein distance, and
the Spearman correlation of the two sets' quantiles at common probabilities (how straight the QQ plot is).
Jointly: the Mahalanobis distance between the group means under the pooled covariance, Hotelling's two-sample
T^2 with its F-distributed p-value, and the Frobenius norm of the difference of the two Spearman correlation
matrices.

The curation (select_features) drops features whose coefficient of variation over the real set exceeds a limit,
then, of each pair whose |Spearman rho| over the real set exceeds a limit, the one more correlated with the rest.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import scipy.spatial.distance
import scipy.stats

PER_FEATURE_KEYS = ('ks', 'ks_p', 'levene', 'levene_p', 'wasserstein', 'qq_spearman')
JOINT_KEYS = ('mahalanobis', 'hotelling_t2', 'hotelling_p', 'corr_frobenius')

#----------------------------------------------------------------------------
# Standardisation and quantiles.


def standardize(values: np.ndarray, real: np.ndarray) -> np.ndarray:
    """values [N, F] in units of the real set [M, F]: (x - mean) / sample std, ignoring NaN (a feature that could not
    be computed for a volume); a feature constant over the real set gives NaN."""
    with warnings.catch_warnings(), np.errstate(divide='ignore', invalid='ignore'):
        warnings.simplefilter('ignore', RuntimeWarning)  # All-NaN columns: NaN is the answer.
        mean, std = np.nanmean(real, 0), np.nanstd(real, 0, ddof=1)
        return np.where(std > 0, (values - mean) / np.where(std > 0, std, 1), np.nan)


def qq_quantiles(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of x and y [K] at K = min(len) common probabilities (k + 0.5) / K: the points of a QQ plot."""
    k = min(len(x), len(y))
    probabilities = (np.arange(k) + 0.5) / k
    return np.quantile(x, probabilities), np.quantile(y, probabilities)


def _quiet(fn, *args, **kwargs):
    """Call a scipy.stats function whose degenerate-input warnings (constant data) the NaN result already says."""
    with warnings.catch_warnings(), np.errstate(all='ignore'):
        warnings.simplefilter('ignore')
        return fn(*args, **kwargs)

#----------------------------------------------------------------------------
# Per feature and joint statistics.


def per_feature(other: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Statistics of one standardised feature: other [N] against real [M]."""
    ks = _quiet(scipy.stats.ks_2samp, other, real)
    levene = _quiet(scipy.stats.levene, other, real)
    q_other, q_real = qq_quantiles(other, real)
    rho = _quiet(scipy.stats.spearmanr, q_other, q_real)
    return {
        'ks': float(ks.statistic), 'ks_p': float(ks.pvalue),
        'levene': float(levene.statistic), 'levene_p': float(levene.pvalue),
        'wasserstein': float(scipy.stats.wasserstein_distance(other, real)),
        'qq_spearman': float(rho.statistic),
    }


def spearman_matrix(x: np.ndarray) -> np.ndarray:
    """Spearman correlation matrix [F, F] of the columns of x [N, F]. A feature constant within the set varies with
    nothing: its correlations are 0 (scipy gives NaN), its diagonal 1."""
    if x.shape[1] == 1:
        return np.ones((1, 1))
    rho = np.nan_to_num(np.atleast_2d(_quiet(scipy.stats.spearmanr, x).statistic), nan=0.0)
    np.fill_diagonal(rho, 1.0)
    return rho


def joint(other: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Joint statistics of standardised features: other [N, F] against real [M, F].

    The pooled covariance is inverted with a pseudo-inverse, so more features than volumes still give a distance;
    Hotelling's p-value needs N + M > F + 1 and is NaN otherwise.
    """
    n, m, f = len(other), len(real), other.shape[1]
    pooled = ((n - 1) * np.atleast_2d(np.cov(other, rowvar=False)) +
              (m - 1) * np.atleast_2d(np.cov(real, rowvar=False))) / (n + m - 2)
    distance = scipy.spatial.distance.mahalanobis(other.mean(0), real.mean(0), np.linalg.pinv(pooled))
    t2 = n * m / (n + m) * distance ** 2
    dfd = n + m - f - 1
    p = float(scipy.stats.f.sf(t2 * dfd / (f * (n + m - 2)), f, dfd)) if dfd > 0 else math.nan
    frobenius = np.linalg.norm(spearman_matrix(other) - spearman_matrix(real))
    return {'mahalanobis': float(distance), 'hotelling_t2': float(t2), 'hotelling_p': p,
            'corr_frobenius': float(frobenius)}


def compare(other: np.ndarray, real: np.ndarray, names: list[str]) -> dict:
    """The report section of one group against the real set (raw features [N, F] and [M, F]).

    Features constant over the real set cannot be standardised: their per-feature values are NaN and they are left
    out of the joint statistics. Values that could not be computed (NaN) are left out of a feature's statistics, and
    their volumes out of the joint ones.

    Raises:
        ValueError: fewer than 2 volumes in a group, or column counts that differ from len(names).
    """
    if len(other) < 2 or len(real) < 2:
        raise ValueError(f'comparisons need at least 2 volumes per group, got {len(other)} and {len(real)}')
    if other.shape[1] != len(names) or real.shape[1] != len(names):
        raise ValueError('feature columns and names differ in number')
    z_other, z_real = standardize(other, real), standardize(real, real)
    usable = np.isfinite(z_real).any(0)
    per = {}
    for k, name in enumerate(names):
        o, r = z_other[:, k][np.isfinite(z_other[:, k])], z_real[:, k][np.isfinite(z_real[:, k])]
        usable[k] &= len(o) >= 2 and len(r) >= 2
        per[name] = per_feature(o, r) if usable[k] else dict.fromkeys(PER_FEATURE_KEYS, math.nan)
    o, r = z_other[:, usable], z_real[:, usable]
    o, r = o[np.isfinite(o).all(1)], r[np.isfinite(r).all(1)]
    enough = usable.any() and len(o) >= 2 and len(r) >= 2
    return {'per_feature': per, 'joint': joint(o, r) if enough else dict.fromkeys(JOINT_KEYS, math.nan)}

#----------------------------------------------------------------------------
# Curation.


def select_features(real: np.ndarray, names: list[str], max_cv: float, max_rho: float) -> dict:
    """The paper's curation over the real set [M, F]: variability, then redundancy.

    1. Drop features whose coefficient of variation std / |mean| exceeds max_cv, and constant features (which no
       statistic can use).
    2. While two kept features have |Spearman rho| > max_rho, drop, of the most correlated pair, the one with the
       larger mean |rho| to the other kept features.

    Returns:
        {'kept': [...], 'dropped_cv': {name: cv}, 'dropped_constant': [...], 'dropped_rho': {name: [partner, rho]},
        'max_cv': max_cv, 'max_rho': max_rho}.
    """
    real = real[np.isfinite(real).all(1)]  # Volumes with a feature that could not be computed are left out.
    mean, std = real.mean(0), real.std(0, ddof=1)
    with np.errstate(divide='ignore', invalid='ignore'):
        cv = np.where(mean != 0, std / np.abs(mean), np.inf)
    constant = ~(std > 0)
    dropped_cv = {names[k]: float(cv[k]) for k in np.flatnonzero(~constant & (cv > max_cv))}
    keep = [k for k in range(len(names)) if not constant[k] and names[k] not in dropped_cv]
    dropped_rho = {}
    if len(keep) > 1:
        rho = np.abs(spearman_matrix(real[:, keep]))
        np.fill_diagonal(rho, 0)
        alive = np.ones(len(keep), dtype=bool)
        while True:
            masked = np.where(np.outer(alive, alive), rho, 0)
            a, b = np.unravel_index(np.argmax(masked), masked.shape)
            if not masked[a, b] > max_rho:
                break
            mean_rho = masked.sum(1) / max(alive.sum() - 1, 1)
            drop, partner = (a, b) if mean_rho[a] >= mean_rho[b] else (b, a)
            alive[drop] = False
            dropped_rho[names[keep[drop]]] = [names[keep[partner]], float(rho[drop, partner])]
        keep = [k for k, a in zip(keep, alive) if a]
    return {'kept': [names[k] for k in keep], 'dropped_cv': dropped_cv,
            'dropped_constant': [names[k] for k in np.flatnonzero(constant)], 'dropped_rho': dropped_rho,
            'max_cv': max_cv, 'max_rho': max_rho}
