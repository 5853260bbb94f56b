# SPDX-License-Identifier: Apache-2.0
"""Slice-wise Frechet Inception Distance (Heusel et al. 2017) on 2D slices of real and generated volumes.

FID = |mu_g - mu_r|^2 + Tr(S_g + S_r - 2 sqrtm(S_g S_r)) on the 2048-d pool features of the official Inception
detector, with biased covariances, for each view (plane and channel); the reported value is the mean over views.
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg

from . import metric_utils


def _sqrtm(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():  # A near-singular product only warns; the caller checks finiteness.
        warnings.simplefilter('ignore')
        return scipy.linalg.sqrtm(a)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance between the Gaussians N(mu1, sigma1) and N(mu2, sigma2)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f'mismatched statistics: means {mu1.shape} vs {mu2.shape}, '
                         f'covariances {sigma1.shape} vs {sigma2.shape}')
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        # Singular product (fewer samples than features): nudge both diagonals, as MONAI's FIDMetric.
        eps = np.eye(sigma1.shape[0]) * 1e-6
        covmean = _sqrtm((sigma1 + eps) @ (sigma2 + eps))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(np.real(covmean)))


def compute_fid(opts: metric_utils.MetricOptions, num_gen: int, slices: str,
                max_real: int | None = None) -> tuple[dict[str, float], dict]:
    """FID between the slices of num_gen generated volumes and of the whole dataset (at most max_real slices).

    Returns:
        ({'': mean over views, '<plane>_<channel>': per view when there are several}, details).
    """
    featurizer = metric_utils.SliceFeaturizer(opts.detector_urls.inception, dict(return_features=True), slices,
                                              opts.device, what=metric_utils.INCEPTION)
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, max_items=max_real,
                                                          capture_mean_cov=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=num_gen, capture_mean_cov=True)
    values = metric_utils.on_rank0(opts, lambda: {
        view: frechet_distance(*gen[view].get_mean_cov(), *real[view].get_mean_cov()) for view in real})
    channel_names = metric_utils.channel_names_of(metric_utils.open_dataset(opts))
    details = dict(detector=opts.detector_urls.inception, slices=slices, num_gen_volumes=num_gen,
                   num_real_rows=_rows(real), num_gen_rows=_rows(gen))
    return metric_utils.combine_views(values, channel_names), details


def _rows(stats: dict) -> int:
    return int(next(iter(stats.values())).num_items)
