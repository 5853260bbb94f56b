# SPDX-License-Identifier: Apache-2.0
"""Comparing radiomics features of two sets of volumes (real vs synthetic, real vs real), as the prostate
3D-StyleGAN2-ADA paper did, with scipy.stats.

All features are first standardised by the real set (its mean and sample standard deviation), so distances are
in units of the real set's spread; a feature constant over the reals (up to rounding, CONSTANT_RTOL) cannot be
and is left out. Per feature: the two-sample Kolmogorov-Smirnov test, Levene's test of equal variances (scipy's
default, centred on the median: the Brown-Forsythe variant), the 1-Wasserstein distance, and the Spearman
correlation of the two sets' quantiles at common probabilities (how straight the QQ plot is). Jointly: the
Mahalanobis distance between the group means under the pooled covariance, Hotelling's two-sample T^2 with its
F-distributed p-value (both undefined with more features than the pooled covariance's degrees of freedom), and
the Frobenius norm of the difference of the two Spearman correlation matrices.

The curation (select_features) drops features whose coefficient of variation over the real set exceeds a limit,
then, of each pair whose |Spearman rho| over the real set exceeds a limit, the one more correlated with the rest.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.spatial.distance
import scipy.stats

PER_FEATURE_KEYS = ('ks', 'ks_p', 'levene', 'levene_p', 'wasserstein', 'qq_spearman')
JOINT_KEYS = ('mahalanobis', 'hotelling_t2', 'hotelling_p', 'corr_frobenius', 'features', 'reason')
SECTION_KEYS = ('per_feature', 'joint', 'reason')

# A feature is constant over the reals when its sample SD <= CONSTANT_RTOL * max(1, |mean|). Features are float64
# sums over up to millions of voxels, so a feature that does not vary comes out with rounding noise of about 1e-16
# to 1e-12 of its size (Energy ~1e10 varies by ~1e-3 in absolute terms); dividing by that noise turned it into
# distances of 1e15. Real variation between volumes is many orders above 1e-9 of a feature's size; the floor of 1
# keeps noise around a true 0 (a skewness of a symmetric ROI) from counting as variation.
CONSTANT_RTOL = 1e-9

#----------------------------------------------------------------------------
# Standardisation and quantiles.


def column_stats(real: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of real [M, F], over its finite values: (count, mean, sample standard deviation) [F]; mean NaN
    without values, SD NaN with fewer than 2 (computed here rather than with np.nanmean, which warns on them)."""
    finite = np.isfinite(real)
    count = finite.sum(0)
    mean = np.divide(np.where(finite, real, 0.0).sum(0), count, out=np.full(real.shape[1], np.nan), where=count > 0)
    squares = np.where(finite, real - np.where(count > 0, mean, 0.0), 0.0) ** 2
    variance = np.divide(squares.sum(0), count - 1, out=np.full(real.shape[1], np.nan), where=count > 1)
    return count, mean, np.sqrt(variance)


def constant_columns(real: np.ndarray) -> np.ndarray:
    """bool [F]: the columns of real [M, F] whose finite values (at least 2) are equal up to CONSTANT_RTOL."""
    count, mean, std = column_stats(real)
    return (count >= 2) & (np.nan_to_num(std, nan=np.inf) <= CONSTANT_RTOL * np.maximum(1.0, np.abs(
        np.nan_to_num(mean))))


def standardize(values: np.ndarray, real: np.ndarray) -> np.ndarray:
    """values [N, F] in units of the real set [M, F]: (x - mean) / sample SD over the finite real values. A feature
    that cannot be standardised (constant over the reals, or fewer than 2 finite real values) gives NaN."""
    count, mean, std = column_stats(real)
    usable = (count >= 2) & ~constant_columns(real)
    return np.divide(values - np.where(usable, mean, 0.0), np.where(usable, std, 1.0),
                     out=np.full(values.shape, np.nan), where=usable & np.isfinite(values))


def qq_quantiles(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantiles of x and y [K] at K = min(len) common probabilities (k + 0.5) / K: the points of a QQ plot."""
    k = min(len(x), len(y))
    probabilities = (np.arange(k) + 0.5) / k
    return np.quantile(x, probabilities), np.quantile(y, probabilities)


def _quiet(fn, *args, **kwargs):
    """Call a scipy.stats function whose degenerate-input warnings (a sample constant within itself) the NaN result
    already says."""
    with warnings.catch_warnings(), np.errstate(all='ignore'):
        warnings.simplefilter('ignore')
        return fn(*args, **kwargs)

#----------------------------------------------------------------------------
# Per feature and joint statistics.


def per_feature(other: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Statistics of one standardised feature: other [N] against real [M] (N, M >= 2)."""
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


def joint(other: np.ndarray, real: np.ndarray, group: str = 'other') -> dict:
    """Joint statistics of standardised features: other [N, F] against real [M, F] (N, M >= 2).

    The pooled covariance has N + M - 2 degrees of freedom: with more features than that it is singular, and the
    Mahalanobis distance and Hotelling's T^2 are undefined (None, with the reason). Features that are exact linear
    combinations of others (firstorder Energy and TotalEnergy on one voxel size) leave it singular too: they are
    handled by the pseudo-inverse, and the F test counts the covariance's rank, the independent features.
    """
    n, m, f = len(other), len(real), other.shape[1]
    frobenius = float(np.linalg.norm(spearman_matrix(other) - spearman_matrix(real)))
    out = {'mahalanobis': None, 'hotelling_t2': None, 'hotelling_p': None, 'corr_frobenius': frobenius,
           'features': f, 'reason': None}
    if n + m - 2 < f:
        out['reason'] = (f'fewer volumes than features: {m} real and {n} {group} volumes give the pooled covariance '
                         f'{n + m - 2} degrees of freedom for {f} features, so it is singular; compare fewer '
                         f'features (--select, --features) or more volumes')
        return out
    pooled = ((n - 1) * np.atleast_2d(np.cov(other, rowvar=False)) +
              (m - 1) * np.atleast_2d(np.cov(real, rowvar=False))) / (n + m - 2)  # [F, F]
    tolerance = f * np.finfo(np.float64).eps  # numpy's matrix_rank default, relative to the largest singular value.
    rank = int(np.linalg.matrix_rank(pooled, rtol=tolerance, hermitian=True))
    inverse = np.linalg.pinv(pooled, rtol=tolerance, hermitian=True)
    distance = scipy.spatial.distance.mahalanobis(other.mean(0), real.mean(0), inverse)
    t2 = n * m / (n + m) * distance ** 2
    dfd = n + m - rank - 1
    out.update(mahalanobis=float(distance), hotelling_t2=float(t2),
               hotelling_p=float(scipy.stats.f.sf(t2 * dfd / (rank * (n + m - 2)), rank, dfd)))
    return out


def undefined_section(names: list[str], reason: str) -> dict:
    """A report section whose statistics cannot be computed: every value None, and why."""
    return {'per_feature': {name: dict.fromkeys(PER_FEATURE_KEYS) for name in names},
            'joint': dict(dict.fromkeys(JOINT_KEYS), features=0, reason=reason), 'reason': reason}


def compare(other: np.ndarray, real: np.ndarray, names: list[str], group: str = 'other') -> dict:
    """The report section of one group against the real set (raw features [N, F] and [M, F]).

    Features constant over the reals (constant_columns) cannot be standardised: their per-feature values are None
    and they are left out of the joint statistics. Values that could not be computed (NaN) are left out of a
    feature's statistics, and their volumes out of the joint ones. With fewer than 2 volumes in a group nothing can
    be compared: every value is None and 'reason' says why.

    Raises:
        ValueError: column counts that differ from len(names).
    """
    if other.shape[1] != len(names) or real.shape[1] != len(names):
        raise ValueError('feature columns and names differ in number')
    if len(other) < 2 or len(real) < 2:
        return undefined_section(names, f'the comparison needs at least 2 volumes in each group: {len(real)} real, '
                                        f'{len(other)} {group}')
    z_other, z_real = standardize(other, real), standardize(real, real)
    usable = np.zeros(len(names), dtype=bool)
    per = {}
    for k, name in enumerate(names):
        o, r = z_other[:, k][np.isfinite(z_other[:, k])], z_real[:, k][np.isfinite(z_real[:, k])]
        usable[k] = len(o) >= 2 and len(r) >= 2
        per[name] = per_feature(o, r) if usable[k] else dict.fromkeys(PER_FEATURE_KEYS)
    o, r = z_other[:, usable], z_real[:, usable]
    o, r = o[np.isfinite(o).all(1)], r[np.isfinite(r).all(1)]
    if not usable.any():
        stats = dict(dict.fromkeys(JOINT_KEYS), features=0, reason='no feature varies over the reals')
    elif len(o) < 2 or len(r) < 2:
        stats = dict(dict.fromkeys(JOINT_KEYS), features=int(usable.sum()),
                     reason='fewer than 2 volumes of a group have every feature')
    else:
        stats = joint(o, r, group)
    return {'per_feature': per, 'joint': stats, 'reason': None}

#----------------------------------------------------------------------------
# Curation.


def select_features(real: np.ndarray, names: list[str], max_cv: float, max_rho: float) -> dict:
    """The paper's curation over the real set [M, F]: variability, then redundancy.

    1. Drop features whose coefficient of variation std / |mean| exceeds max_cv, and features constant over the
       reals (constant_columns: no statistic can use them).
    2. While two kept features have |Spearman rho| > max_rho, drop, of the most correlated pair, the one with the
       larger mean |rho| to the other kept features.

    Returns:
        {'kept': [...], 'dropped_cv': {name: cv}, 'dropped_constant': [...], 'dropped_rho': {name: [partner, rho]},
        'max_cv': max_cv, 'max_rho': max_rho}.
    """
    real = real[np.isfinite(real).all(1)]  # Volumes with a feature that could not be computed are left out.
    _, mean, std = column_stats(real)
    cv = np.divide(std, np.abs(mean), out=np.full(len(names), np.inf), where=mean != 0)
    constant = constant_columns(real) | ~(np.nan_to_num(std, nan=0.0) > 0)  # ~(std > 0): fewer than 2 volumes.
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
