# SPDX-License-Identifier: Apache-2.0
"""Precision and recall against a brute-force implementation on tiny sets."""

import numpy as np
import pytest
import torch

from metrics import precision_recall


def _brute_radii(x: np.ndarray, k: int) -> np.ndarray:
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return np.sort(d, axis=1)[:, k]  # Column 0 is the point itself.


def _brute_coverage(points: np.ndarray, manifold: np.ndarray, radii: np.ndarray) -> float:
    d = np.sqrt(((points[:, None] - manifold[None]) ** 2).sum(-1))
    return float((d <= radii[None]).any(axis=1).mean())


def test_radii_match_brute_force_with_batching():
    x = np.random.RandomState(0).randn(37, 5).astype(np.float32)
    got = precision_recall.manifold_radii(torch.from_numpy(x), nhood_size=3, row_batch=7, col_batch=9)
    np.testing.assert_allclose(got.numpy(), _brute_radii(x.astype(np.float64), 3), rtol=1e-5)


def test_precision_recall_match_brute_force():
    rng = np.random.RandomState(1)
    real = rng.randn(40, 5).astype(np.float32)
    gen = (rng.randn(35, 5) * 0.6 + 0.8).astype(np.float32)
    p, r = precision_recall.precision_recall(torch.from_numpy(real), torch.from_numpy(gen), nhood_size=3,
                                             row_batch=6, col_batch=11)
    real64, gen64 = real.astype(np.float64), gen.astype(np.float64)
    assert p == pytest.approx(_brute_coverage(gen64, real64, _brute_radii(real64, 3)))
    assert r == pytest.approx(_brute_coverage(real64, gen64, _brute_radii(gen64, 3)))
    assert 0 < p < 1 and 0 < r < 1  # The sets overlap partly, so neither is trivial.


def test_identical_sets_give_one_and_one():
    x = torch.randn(25, 4)
    assert precision_recall.precision_recall(x, x.clone(), nhood_size=3, row_batch=8, col_batch=8) == (1.0, 1.0)


def test_disjoint_sets_give_zero_and_too_few_points_fail():
    x = torch.randn(20, 3)
    assert precision_recall.precision_recall(x, x + 100) == (0.0, 0.0)
    with pytest.raises(ValueError, match='more than 3 points'):
        precision_recall.manifold_radii(x[:3], nhood_size=3)
