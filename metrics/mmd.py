# SPDX-License-Identifier: Apache-2.0
"""Linear-kernel MMD^2 between real and generated volumes (3D-StyleGAN's bMMD2, MONAI's MMDMetric).

Volumes are flattened to vectors of V voxels in [-1, 1] and compared with the kernel k(x, y) = x.y. The estimator is
the unbiased one of MONAI's MMDMetric (diagonal terms left out):
    MMD^2 = sum_{i != j} x_i.x_j / (m (m - 1)) + sum_{i != j} y_i.y_j / (n (n - 1)) - 2 sum_{i, j} x_i.y_j / (m n),
computed over all m real and n generated volumes at once from running sums (no m x n Gram matrix), which equals the
average of the batch estimate over all batches. The reported value is divided by V (a per-voxel value, so volumes of
different sizes give comparable numbers); multiply by V for MONAI's number. Its expectation is 0 when both sets
come from one distribution, so small negative values occur.
"""

from __future__ import annotations

import numpy as np
import torch

from . import metric_utils


def linear_mmd2(x: torch.Tensor, y: torch.Tensor) -> float:
    """Unbiased linear-kernel MMD^2 of two sets of volumes (any shape [N, ...]), by the direct O(N^2) formula."""
    x = x.reshape(x.shape[0], -1).double()
    y = y.reshape(y.shape[0], -1).double()
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f'unbiased MMD needs at least 2 volumes per set, got {m} and {n}')
    kxx, kyy, kxy = x @ x.T, y @ y.T, x @ y.T
    xx = (kxx.sum() - kxx.trace()) / (m * (m - 1))
    yy = (kyy.sum() - kyy.trace()) / (n * (n - 1))
    return float(xx + yy - 2 * kxy.sum() / (m * n))


def linear_mmd2_from_moments(mean_x: np.ndarray, sqnorm_x: float, m: int, mean_y: np.ndarray, sqnorm_y: float,
                             n: int) -> float:
    """The same estimator from means [V], mean squared norms and counts.

    Uses sum_{i != j} x_i.x_j = |sum_i x_i|^2 - sum_i |x_i|^2, so no Gram matrix is formed.
    """
    if m < 2 or n < 2:
        raise ValueError(f'unbiased MMD needs at least 2 volumes per set, got {m} and {n}')
    xx = (m * float(mean_x @ mean_x) - sqnorm_x) / (m - 1)
    yy = (n * float(mean_y @ mean_y) - sqnorm_y) / (n - 1)
    return xx + yy - 2 * float(mean_x @ mean_y)


class VoxelFeaturizer(metric_utils.Featurizer):
    """One row per volume channel: its voxels in [-1, 1], flattened."""

    name = 'voxels'

    def cache_key(self) -> dict:
        return dict(features='voxels in [-1, 1]')

    def __call__(self, volumes: torch.Tensor) -> dict[metric_utils.View, torch.Tensor]:
        x = metric_utils.uint8_range_to_unit(volumes)
        return {('volume', c): x[:, c].reshape(x.shape[0], 1, -1) for c in range(x.shape[1])}  # [N, 1, D*H*W]


def compute_mmd(opts: metric_utils.MetricOptions, num_gen: int | None = None) -> tuple[dict[str, float], dict]:
    """Per-voxel unbiased linear MMD^2 between all real volumes and num_gen generated ones (None: as many as
    the dataset holds)."""
    dataset = metric_utils.open_dataset(opts)
    num_gen = num_gen or len(dataset)
    featurizer = VoxelFeaturizer()
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, capture_mean_sqnorm=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=num_gen,
                                                           capture_mean_sqnorm=True)
    values = {}
    for view in real:
        mean_x, sq_x = real[view].get_mean_sqnorm()
        mean_y, sq_y = gen[view].get_mean_sqnorm()
        mmd = linear_mmd2_from_moments(mean_x, sq_x, real[view].num_items, mean_y, sq_y, gen[view].num_items)
        values[view] = mmd / mean_x.shape[0]
    details = dict(kernel='linear', estimator='unbiased', scale='per voxel, intensities in [-1, 1]',
                   num_real_volumes=int(next(iter(real.values())).num_items), num_gen_volumes=num_gen)
    return metric_utils.combine_views(values, metric_utils.channel_names_of(dataset)), details
