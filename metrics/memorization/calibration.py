# SPDX-License-Identifier: Apache-2.0
"""Calibrating the copy threshold on a holdout: the null, the threshold, p-values and the copy rate's interval.

The null is the nearest-training similarity of each holdout case: real cases the model never saw, so what a novel
volume's similarity looks like. With n of them, a similarity s gets the empirical p-value

    p(s) = (1 + #{null >= s}) / (n + 1),

the chance that a case exchangeable with the holdout is at least as close to the training set (it counts s itself
as one more draw, so p is never 0 and a novel volume has P(p <= alpha) <= alpha). A volume is flagged as a likely
copy when p <= alpha, which is the same as s above the threshold: the k-th largest null value, k = floor(alpha
(n + 1)), the (1 - alpha) quantile of the null in this sense. n < 1/alpha - 1 leaves no such quantile.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.stats

QUANTILES = {'min': 0.0, 'q05': 0.05, 'q25': 0.25, 'median': 0.5, 'q75': 0.75, 'q95': 0.95, 'max': 1.0}


def min_holdout(alpha: float) -> int:
    """The fewest holdout cases that calibrate a threshold at level alpha."""
    return max(math.ceil(1 / alpha - 1 - 1e-9), 1)


def _rank(alpha: float, n: int) -> int:
    return int(math.floor(alpha * (n + 1) + 1e-9))  # The tolerance keeps 0.05 * 20 at 1 under rounding.


def threshold(null: np.ndarray, alpha: float) -> float:
    """The k-th largest null similarity, k = floor(alpha (n + 1)): s > threshold exactly when p(s) <= alpha.

    Raises:
        ValueError: too few holdout cases for alpha.
    """
    null = np.sort(np.asarray(null, dtype=np.float64))
    k = _rank(alpha, len(null))
    if k < 1:
        raise ValueError(f'{len(null)} holdout case{"s" if len(null) != 1 else ""} cannot calibrate alpha={alpha:g}; '
                         f'it needs at least {min_holdout(alpha)} (or a larger --alpha)')
    return float(null[len(null) - k])


def p_values(null: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """(1 + #{null >= s}) / (n + 1) for every s in similarity."""
    null = np.sort(np.asarray(null, dtype=np.float64))
    at_least = len(null) - np.searchsorted(null, np.asarray(similarity, dtype=np.float64), side='left')
    return (1 + at_least) / (len(null) + 1)


def proportion_ci(count: int, total: int, level: float = 0.95) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a proportion, by scipy.stats.binomtest; (nan, nan) for total 0."""
    if total == 0:
        return (math.nan, math.nan)
    ci = scipy.stats.binomtest(int(count), int(total)).proportion_ci(confidence_level=level, method='exact')
    return (float(ci.low), float(ci.high))


def summarize(values: np.ndarray) -> dict:
    """{'n', 'min', 'q05', 'q25', 'median', 'q75', 'q95', 'max'} of the finite values (numpy's linear quantiles)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {'n': 0, **{key: None for key in QUANTILES}}
    return {'n': int(values.size), **{key: float(np.quantile(values, q)) for key, q in QUANTILES.items()}}
