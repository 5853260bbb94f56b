# SPDX-License-Identifier: Apache-2.0
"""KID against the direct O(n^2) unbiased MMD^2 with the cubic polynomial kernel."""

import inspect

import numpy as np
import pytest

from metrics import kernel_inception_distance
from metrics.kernel_inception_distance import kernel_distance


def _direct_kid(x: np.ndarray, y: np.ndarray) -> float:
    n, m = x.shape[1], x.shape[0]
    k = lambda a, b: (a @ b.T / n + 1) ** 3  # noqa: E731
    total = 0.0
    for i in range(m):  # Pair by pair, the textbook definition.
        for j in range(m):
            if i != j:
                total += (k(x[i:i + 1], x[j:j + 1]) + k(y[i:i + 1], y[j:j + 1])).item() / (m * (m - 1))
            total -= 2 * k(x[i:i + 1], y[j:j + 1]).item() / (m * m)
    return total


def test_kid_with_whole_sets_matches_direct_formula():
    # With m = both set sizes every subset is a permutation of the whole set, so KID is the plain estimator.
    rng = np.random.RandomState(0)
    x, y = rng.randn(30, 6), rng.randn(30, 6) * 1.3 + 0.4
    got = kernel_distance(x, y, num_subsets=3, max_subset_size=1000)
    assert got == pytest.approx(_direct_kid(x, y), rel=1e-10)


def test_kid_subsets_average_direct_estimates():
    rng = np.random.RandomState(1)
    x, y = rng.randn(50, 4), rng.randn(40, 4) + 0.5
    subsets, m, seed = 4, 10, 7
    draws = np.random.RandomState(seed)
    want = np.mean([_direct_kid(x[draws.choice(50, m, replace=False)], y[draws.choice(40, m, replace=False)])
                    for _ in range(subsets)])
    assert kernel_distance(x, y, num_subsets=subsets, max_subset_size=m, seed=seed) == pytest.approx(want, rel=1e-10)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    rng = np.random.RandomState(2)
    x, y = rng.randn(2000, 8), rng.randn(2000, 8)
    same = kernel_distance(x, y, num_subsets=20, max_subset_size=500)
    shifted = kernel_distance(x, y + 1.0, num_subsets=20, max_subset_size=500)
    assert abs(same) < 0.02 and shifted > 0.5
    with pytest.raises(ValueError, match='at least 2'):
        kernel_distance(x[:1], y)



def test_kid_defaults_are_100_subsets_of_at_most_1000_rows():
    # The official settings, for the function and for the metric (checked cheaply; the subset logic is tested above).
    for fn in (kernel_distance, kernel_inception_distance.compute_kid):
        params = inspect.signature(fn).parameters
        assert params['num_subsets'].default == 100 and params['max_subset_size'].default == 1000, fn.__name__
    assert inspect.signature(kernel_inception_distance.compute_kid).parameters['max_real'].default == 1_000_000
    # With more rows than that on each side, every subset has exactly max_subset_size rows.
    rng = np.random.RandomState(3)
    x, y = rng.randn(130, 3), rng.randn(110, 3) * 0.8 + 0.2
    draws = np.random.RandomState(11)
    want = np.mean([_direct_kid(x[draws.choice(130, 12, replace=False)], y[draws.choice(110, 12, replace=False)])
                    for _ in range(100)])
    assert kernel_distance(x, y, max_subset_size=12, seed=11) == pytest.approx(want, rel=1e-10)
