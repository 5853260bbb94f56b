# SPDX-License-Identifier: Apache-2.0
"""Improved precision and recall (Kynkaanniemi et al. 2019) on VGG16 features of 2D slices.

Each feature set spans a manifold: the union of balls around its points, each with the radius to the point's
k-th nearest neighbour (k = nhood_size; the point itself is the 0-th). Precision is the fraction of generated
points inside the real manifold, recall the fraction of real points inside the generated one. Distances are
computed with torch.cdist in blocks of row_batch x col_batch, with rows dealt to the ranks.
"""

from __future__ import annotations

import torch

from . import metric_utils


def manifold_radii(features: torch.Tensor, nhood_size: int = 3, row_batch: int = 10000, col_batch: int = 10000,
                   num_gpus: int = 1, rank: int = 0) -> torch.Tensor:
    """Distance from each row of [N, F] to its nhood_size-th nearest other row (counting itself as 0-th): [N]."""
    n = features.shape[0]
    if n <= nhood_size:
        raise ValueError(f'precision/recall with nhood_size={nhood_size} needs more than {nhood_size} points, '
                         f'got {n}')
    radii = torch.zeros([n], dtype=torch.float32, device=features.device)
    for start in range(rank * row_batch, n, num_gpus * row_batch):
        rows = features[start:start + row_batch]
        best = None  # [rows, nhood_size + 1] smallest distances so far, kept instead of full [rows, N] rows.
        for col in range(0, n, col_batch):
            d = torch.cdist(rows.unsqueeze(0), features[col:col + col_batch].unsqueeze(0)).squeeze(0)
            d = d if best is None else torch.cat([best, d], dim=1)
            best = d.topk(min(nhood_size + 1, d.shape[1]), dim=1, largest=False).values
        radii[start:start + rows.shape[0]] = best[:, nhood_size]
    return metric_utils.all_reduce_sum(radii, num_gpus)


def coverage(points: torch.Tensor, manifold: torch.Tensor, radii: torch.Tensor, row_batch: int = 10000,
             col_batch: int = 10000, num_gpus: int = 1, rank: int = 0) -> float:
    """Fraction of `points` [M, F] within radii[j] of some manifold[j] [N, F]."""
    inside = torch.zeros([points.shape[0]], dtype=torch.float32, device=points.device)
    for start in range(rank * row_batch, points.shape[0], num_gpus * row_batch):
        rows = points[start:start + row_batch]
        hit = torch.zeros([rows.shape[0]], dtype=torch.bool, device=points.device)
        for col in range(0, manifold.shape[0], col_batch):
            d = torch.cdist(rows.unsqueeze(0), manifold[col:col + col_batch].unsqueeze(0)).squeeze(0)
            hit |= (d <= radii[col:col + col_batch].unsqueeze(0)).any(dim=1)
        inside[start:start + rows.shape[0]] = hit.float()
    return float(metric_utils.all_reduce_sum(inside, num_gpus).mean())


def precision_recall(real: torch.Tensor, gen: torch.Tensor, nhood_size: int = 3, row_batch: int = 10000,
                     col_batch: int = 10000, num_gpus: int = 1, rank: int = 0) -> tuple[float, float]:
    """(precision, recall) of generated features [M, F] against real features [N, F]."""
    real, gen = real.float(), gen.float()
    kw = dict(row_batch=row_batch, col_batch=col_batch, num_gpus=num_gpus, rank=rank)
    real_radii = manifold_radii(real, nhood_size, **kw)
    gen_radii = manifold_radii(gen, nhood_size, **kw)
    return coverage(gen, real, real_radii, **kw), coverage(real, gen, gen_radii, **kw)


def compute_pr(opts: metric_utils.MetricOptions, num_gen: int, slices: str, max_real: int | None = 200_000,
               nhood_size: int = 3, row_batch: int = 10000, col_batch: int = 10000) -> tuple[dict[str, float], dict]:
    """Precision and recall of the slices of num_gen generated volumes against the dataset's slices."""
    featurizer = metric_utils.SliceFeaturizer(opts.detector_urls.vgg16, dict(return_features=True), slices,
                                              opts.device, what=metric_utils.VGG16)
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, max_items=max_real, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=num_gen, capture_all=True)
    precision, recall = {}, {}
    for view in real:
        precision[view], recall[view] = precision_recall(
            real[view].get_all_torch().to(opts.device), gen[view].get_all_torch().to(opts.device), nhood_size,
            row_batch, col_batch, opts.num_gpus, opts.rank)
    channel_names = metric_utils.channel_names_of(metric_utils.open_dataset(opts))
    values = dict(metric_utils.combine_views(precision, channel_names, prefix='precision'))
    values.update(metric_utils.combine_views(recall, channel_names, prefix='recall'))
    details = dict(detector=opts.detector_urls.vgg16, slices=slices, num_gen_volumes=num_gen, nhood_size=nhood_size)
    return values, details
