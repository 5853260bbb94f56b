# SPDX-License-Identifier: Apache-2.0
"""3D SSIM and MS-SSIM (Wang et al. 2003) that work on anisotropic volumes such as 256x256x24 and 80x96x112.

SSIM uses a separable Gaussian window (sigma 1.5), K1 = 0.01, K2 = 0.03, valid filtering (no padding). Per axis, the
window is min(11, size), made odd, so a short axis gets a shorter window (a 1-voxel axis none). MS-SSIM has 5
scales with Wang's weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333): contrast-structure at the first four, full
SSIM at the last, negative terms clipped to 0. Between scales an axis is halved (2-voxel average pooling; an odd
last voxel is dropped) only while it still holds two full windows (size >= 22): a 24-slice axis is halved once
(24 -> 12) and then kept, while 256-voxel in-plane axes go down to 16. MONAI's version halves every axis and
rejects both shapes; this rule keeps every scale well defined and follows the data's coarser slice spacing.

Diversity metric: MS-SSIM between pairs of generated volumes (lower = more diverse), reported with the same
quantity for random pairs of real volumes for reference. Intensities are mapped to [0, 1] (data range 1).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from volumes.contract import format_size, from_unit
from volumes.packed import PackedDataset

from . import metric_utils

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
Pair = tuple[torch.Tensor, torch.Tensor]  # Two batches [n, C, D, H, W] compared item by item.

#----------------------------------------------------------------------------
# SSIM building blocks.


def window_sizes(shape: Sequence[int], win_size: int = 11) -> tuple[int, ...]:
    """Per-axis window: min(win_size, size), reduced by one when even."""
    sizes = []
    for s in shape:
        w = min(win_size, int(s))
        sizes.append(max(w - 1 if w % 2 == 0 else w, 1))
    return tuple(sizes)


def _gaussian(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    return g / g.sum()


def gaussian_filter(x: torch.Tensor, wins: Sequence[int], sigma: float = 1.5) -> torch.Tensor:
    """Separable Gaussian filter of [N, C, D, H, W] over D, H, W with valid padding (window 1 = untouched axis)."""
    C = x.shape[1]
    for axis, w in enumerate(wins):
        if w == 1:
            continue
        shape = [C, 1, 1, 1, 1]
        shape[2 + axis] = w
        kernel = _gaussian(w, sigma, x.device, x.dtype).reshape(shape)  # [C, 1, kD, kH, kW], one axis long.
        x = F.conv3d(x, kernel, groups=C)
    return x


def ssim_components(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11,
                    sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> tuple[torch.Tensor, torch.Tensor]:
    """(SSIM, contrast-structure), each averaged over space: [N, C], for [N, C, D, H, W] inputs."""
    if x.shape != y.shape or x.ndim != 5:
        raise ValueError(f'SSIM needs two [N, C, D, H, W] tensors of one shape, got {tuple(x.shape)} and '
                         f'{tuple(y.shape)}')
    wins = window_sizes(x.shape[2:], win_size)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_x, mu_y = gaussian_filter(x, wins, sigma), gaussian_filter(y, wins, sigma)
    var_x = gaussian_filter(x * x, wins, sigma) - mu_x.square()
    var_y = gaussian_filter(y * y, wins, sigma) - mu_y.square()
    cov = gaussian_filter(x * y, wins, sigma) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    luminance = (2 * mu_x * mu_y + c1) / (mu_x.square() + mu_y.square() + c1)
    return (luminance * cs).mean(dim=(2, 3, 4)), cs.mean(dim=(2, 3, 4))


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win_size: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Mean SSIM of [N, C, D, H, W] volumes: [N, C]."""
    return ssim_components(x, y, data_range, win_size, sigma, k1, k2)[0]


def downsample(x: torch.Tensor, win_size: int = 11) -> torch.Tensor:
    """Halve (2-voxel average) each of D, H, W that holds at least two windows; keep the others."""
    factors = [2 if s >= 2 * win_size else 1 for s in x.shape[2:]]
    if factors == [1, 1, 1]:
        return x
    return F.avg_pool3d(x, kernel_size=factors, stride=factors)


def ms_ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, weights: Sequence[float] = WEIGHTS,
            win_size: int = 11, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """MS-SSIM of [N, C, D, H, W] volumes: [N, C] (1 for identical volumes)."""
    terms = []
    for level in range(len(weights)):
        s, cs = ssim_components(x, y, data_range, win_size, sigma, k1, k2)
        if level == len(weights) - 1:
            terms.append(s.clamp(min=0))
        else:
            terms.append(cs.clamp(min=0))
            x, y = downsample(x, win_size), downsample(y, win_size)
    w = torch.as_tensor(weights, dtype=x.dtype, device=x.device).reshape(-1, 1, 1)
    return torch.stack(terms).pow(w).prod(dim=0)  # [levels, N, C] -> [N, C]


def best_slice_ssim(volume: torch.Tensor, reals: torch.Tensor, data_range: float = 2.0,
                    batch_size: int = 16) -> float:
    """The highest mean 2D slice SSIM between `volume` [C, D, H, W] and any of `reals` [N, C, D, H, W].

    Corresponding axial slices are compared with 2D SSIM (11x11 window), averaged over slices and channels; the
    best real volume counts. Inputs in [-1, 1] by default (data_range 2).
    """
    if volume.ndim != 4 or reals.ndim != 5 or tuple(reals.shape[1:]) != tuple(volume.shape):
        raise ValueError(f'expected volume [C, D, H, W] and reals [N, C, D, H, W] of the same shape, got '
                         f'{tuple(volume.shape)} and {tuple(reals.shape)}')
    C, D, H, W = volume.shape
    x = volume.float().permute(1, 0, 2, 3).reshape(D, C, 1, H, W)  # Slices as a batch of 1-deep volumes.
    best = -1.0
    for start in range(0, reals.shape[0], batch_size):
        r = reals[start:start + batch_size].to(x.device).float()
        n = r.shape[0]
        r = r.permute(0, 2, 1, 3, 4).reshape(n * D, C, 1, H, W)  # [n, C, D, H, W] -> [n * D, C, 1, H, W]
        s = ssim(x.repeat(n, 1, 1, 1, 1), r, data_range=data_range)  # [n * D, C]
        best = max(best, float(s.reshape(n, -1).mean(dim=1).max()))
    return best

#----------------------------------------------------------------------------
# The diversity metric.


def _pair_sums(opts: metric_utils.MetricOptions, batches: Iterable[Pair], num_channels: int) -> torch.Tensor:
    """Sum over this rank's pairs of MS-SSIM per channel, and the pair count, reduced over ranks: [C + 1]."""
    sums = torch.zeros([num_channels + 1], dtype=torch.float64, device=opts.device)
    for a, b in batches:
        sums[:-1] += ms_ssim(a / 255, b / 255).double().sum(dim=0)
        sums[-1] += a.shape[0]
    return metric_utils.all_reduce_sum(sums, opts.num_gpus)


def _generated_pairs(opts: metric_utils.MetricOptions, G: torch.nn.Module, dataset: Any, num_pairs: int,
                     batch: int) -> Iterator[Pair]:
    """This rank's share of num_pairs generated pairs (pair j: items 2j and 2j + 1 of sampler stream 1, pairs dealt
    round-robin), in batches of at most `batch` pairs."""
    pairs = list(range(opts.rank, num_pairs, opts.num_gpus))
    sample = metric_utils.volume_sampler(opts, G, dataset, stream=1)
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        v = sample([2 * j for j in chunk] + [2 * j + 1 for j in chunk])
        yield v[:len(chunk)], v[len(chunk):]


def _real_pairs(opts: metric_utils.MetricOptions, dataset: Any, num_pairs: int, batch: int) -> Iterator[Pair]:
    """This rank's share of num_pairs random pairs of distinct real volumes (the same draw on every rank)."""
    rng = np.random.RandomState(opts.seed % (1 << 32))
    pairs = np.stack([rng.choice(len(dataset), 2, replace=False) for _ in range(num_pairs)])[opts.rank::opts.num_gpus]
    for start in range(0, len(pairs), batch):
        chunk = pairs[start:start + batch]
        vols = next(metric_utils.iterate_real_volumes(opts, dataset, chunk.reshape(-1), batch_size=2 * len(chunk),
                                                      num_workers=0))
        yield vols[0::2], vols[1::2]


def compute_msssim(opts: metric_utils.MetricOptions, num_pairs: int, batch: int = 8) -> tuple[dict[str, float], dict]:
    """Mean MS-SSIM of num_pairs generated pairs ('' key) and of num_pairs random real pairs ('real')."""
    dataset = metric_utils.open_dataset(opts)
    if len(dataset) < 2:
        raise ValueError('MS-SSIM of real pairs needs a dataset of at least 2 volumes')
    G = metric_utils.prepare_generator(opts, dataset)
    with metric_utils.seeded_rng(opts, stream=1):
        gen = _pair_sums(opts, _generated_pairs(opts, G, dataset, num_pairs, batch), dataset.num_channels)
    real = _pair_sums(opts, _real_pairs(opts, dataset, num_pairs, batch), dataset.num_channels)
    names = metric_utils.channel_names_of(dataset)
    gen_values = {('volume', c): float(gen[c] / gen[-1]) for c in range(dataset.num_channels)}
    real_values = {('volume', c): float(real[c] / real[-1]) for c in range(dataset.num_channels)}
    values = metric_utils.combine_views(gen_values, names)
    values.update(metric_utils.combine_views(real_values, names, prefix='real'))
    details = dict(num_pairs=num_pairs, win_size=11, sigma=1.5, weights=list(WEIGHTS), data_range='[0, 1]')
    return values, details


def make_qc_filter(qc_data: str, threshold: float, G, device: torch.device) -> Callable[[np.ndarray], bool]:
    """The prostate paper's QC filter (generate.py --qc-data --qc-ssim): keep a generated volume [K, D, H, W] in
    [-1, 1] when its best mean slice SSIM to any real volume of the packed dataset `qc_data` is >= threshold.

    The generated volume is compared as it will be written (clipped to the stored range); the real volumes stay in
    their stored dtype in CPU memory and go to `device` a batch at a time, where the SSIM is computed. Raises
    ValueError (one line naming the dataset) when the dataset cannot be read or does not fit the network.
    """
    dataset = PackedDataset(qc_data)
    if dataset.img_shape != tuple(G.img_shape):
        raise ValueError(f'{qc_data} holds volumes of size {format_size(dataset.img_shape)}; the network makes '
                         f'{format_size(G.img_shape)}')
    if dataset.num_channels != len(G.volume_info.channels):
        raise ValueError(f'{qc_data} has {dataset.num_channels} channels; the network makes '
                         f'{len(G.volume_info.channels)}')
    reals = torch.from_numpy(np.stack([dataset.volume(i) for i in range(len(dataset))]))  # [N, C, D, H, W]
    info = dataset.volume_info

    def keep(volume: np.ndarray) -> bool:
        stored = from_unit(volume[:dataset.num_channels], info.dtype).astype(np.float32)  # [C, D, H, W] as written
        return best_slice_ssim(torch.from_numpy(stored).to(device), reals, data_range=info.max_value) >= threshold
    return keep
