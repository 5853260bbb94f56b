# SPDX-License-Identifier: Apache-2.0
"""Slice-wise Kernel Inception Distance (Binkowski et al. 2018): unbiased MMD^2 with the kernel
k(x, y) = (x.y / n + 1)^3 (n: feature dimension), averaged over 100 random subsets of at most 1000 rows each."""

from __future__ import annotations

import numpy as np
import torch

from . import metric_utils


def kernel_distance(real_features: np.ndarray | torch.Tensor, gen_features: np.ndarray | torch.Tensor,
                    num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0,
                    device: torch.device | str = 'cpu') -> float:
    """KID between two feature sets [N, F], in float64.

    Each subset draws m = min(N_real, N_gen, max_subset_size) rows from each set without replacement and adds
    (sum of off-diagonal k(x, x') + k(y, y')) / (m - 1) - 2 sum k(x, y) / m; the sum is divided by
    num_subsets * m.
    """
    x = torch.as_tensor(real_features).to(device, torch.float64)
    y = torch.as_tensor(gen_features).to(device, torch.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f'features must be [N, F] with equal F, got {tuple(x.shape)} and {tuple(y.shape)}')
    n = x.shape[1]
    m = min(x.shape[0], y.shape[0], max_subset_size)
    if m < 2:
        raise ValueError(f'KID needs at least 2 rows on each side, got {x.shape[0]} and {y.shape[0]}')
    rng = np.random.RandomState(seed)
    t = 0.0
    for _ in range(num_subsets):
        xs = x[torch.from_numpy(rng.choice(x.shape[0], m, replace=False)).to(x.device)]
        ys = y[torch.from_numpy(rng.choice(y.shape[0], m, replace=False)).to(y.device)]
        kxx = (xs @ xs.T / n + 1) ** 3
        kyy = (ys @ ys.T / n + 1) ** 3
        kxy = (xs @ ys.T / n + 1) ** 3
        within = kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()
        t += float(within / (m - 1) - 2 * kxy.sum() / m)
    return t / num_subsets / m


def compute_kid(opts: metric_utils.MetricOptions, num_gen: int, slices: str, max_real: int | None = 1_000_000,
                num_subsets: int = 100, max_subset_size: int = 1000) -> tuple[dict[str, float], dict]:
    """KID between the slices of num_gen generated volumes and of the dataset (at most max_real slices)."""
    featurizer = metric_utils.SliceFeaturizer(opts.detector_urls.inception, dict(return_features=True), slices,
                                              opts.device, what=metric_utils.INCEPTION)
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, max_items=max_real, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=num_gen, capture_all=True)
    values = metric_utils.on_rank0(opts, lambda: {
        view: kernel_distance(real[view].get_all_torch(), gen[view].get_all_torch(), num_subsets, max_subset_size,
                              seed=opts.seed, device=opts.device) for view in real})
    channel_names = metric_utils.channel_names_of(metric_utils.open_dataset(opts))
    details = dict(detector=opts.detector_urls.inception, slices=slices, num_gen_volumes=num_gen,
                   num_subsets=num_subsets, max_subset_size=max_subset_size)
    return metric_utils.combine_views(values, channel_names), details
