# SPDX-License-Identifier: Apache-2.0
"""Linear-kernel MMD^2: direct formula, the running-moment form, and its expectation."""

import numpy as np
import pytest
import torch

from metrics import metric_utils, mmd


def _pairwise_mmd(x: np.ndarray, y: np.ndarray) -> float:
    # Textbook unbiased estimator, pair by pair.
    m, n = len(x), len(y)
    xx = sum(x[i] @ x[j] for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(y[i] @ y[j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(x[i] @ y[j] for i in range(m) for j in range(n)) / (m * n)
    return float(xx + yy - 2 * xy)


def test_direct_and_moment_forms_match_the_pairwise_definition():
    rng = np.random.RandomState(0)
    x = rng.randn(6, 2, 3, 4)  # Volumes of any shape are flattened.
    y = rng.randn(5, 2, 3, 4) * 0.5 + 0.3
    want = _pairwise_mmd(x.reshape(6, -1), y.reshape(5, -1))
    assert mmd.linear_mmd2(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(want, rel=1e-12)
    sx = metric_utils.FeatureStats(capture_mean_sqnorm=True)
    sy = metric_utils.FeatureStats(capture_mean_sqnorm=True)
    sx.append(x.reshape(6, -1)[:4])
    sx.append(x.reshape(6, -1)[4:])
    sy.append(y.reshape(5, -1))
    got = mmd.linear_mmd2_from_moments(*sx.get_mean_sqnorm(), 6, *sy.get_mean_sqnorm(), 5)
    assert got == pytest.approx(want, rel=1e-10)


def test_near_zero_for_one_distribution_and_the_squared_shift_otherwise():
    rng = np.random.RandomState(1)
    x, y = torch.from_numpy(rng.randn(200, 50)), torch.from_numpy(rng.randn(200, 50))
    assert abs(mmd.linear_mmd2(x, y)) < 0.5  # Standard deviation about 0.07 here; the shift below gives 12.5.
    assert mmd.linear_mmd2(x, y + 0.5) == pytest.approx(50 * 0.25, rel=0.1)
    with pytest.raises(ValueError, match='at least 2'):
        mmd.linear_mmd2(x[:1], y)


def test_voxel_featurizer_rows_are_unit_range_voxels():
    volumes = torch.tensor([0.0, 127.5, 255.0]).repeat(2, 2, 1, 1, 2)  # [2, 2, 1, 1, 6]
    features = mmd.VoxelFeaturizer()(volumes)
    assert set(features) == {('volume', 0), ('volume', 1)}
    assert features[('volume', 1)].shape == (2, 1, 6)
    np.testing.assert_allclose(features[('volume', 0)][0, 0].numpy(), [-1, 0, 1, -1, 0, 1])
