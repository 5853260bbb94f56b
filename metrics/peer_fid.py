# SPDX-License-Identifier: Apache-2.0
"""The 3D FID protocols of published 3D generators, as named metrics, so that a number can be set beside theirs.

Each protocol is what the peer's own evaluation code does to a volume before its FID, checked against that code on
the same volumes and weights (tests/metrics/test_peer_fid.py, fixtures and commands in tests/data/peers/):

- `hagan` (HA-GAN, Sun et al. 2022; 3D-MedDiffusion reuses HA-GAN's code): MedicalNet ResNet-50 (`resnet_50.pth`) on
  the raw [-1, 1] volume in SimpleITK's (z, y, x) array order, layer4 averaged over the volume.
- `wdm` (WDM-3D, Friedrich et al. 2024): MedicalNet ResNet-50 (`resnet_50_23dataset.pth`) on the volume in [0, 1]
  in nibabel's (x, y, z) array order, layer4 averaged.
- `brainldm` (Pinaya et al. 2022): MedicalNet ResNet-50 (`resnet_50_23dataset.pth`, through the
  Warvito/MedicalNet-models hub) on MONAI's NormalizeIntensity z-score ((x - mean) / population std) in nibabel's
  (x, y, z) order, layer4 averaged.
- `maisi` (MAISI, Guo et al. 2025): RadImageNet ResNet-50 on every slice of the three planes of the volume turned to
  RAS (MONAI's Orientation): XY (along z), YZ (along x), ZX (along y); each plane's slice stack min-max scaled to
  [0, 1] over the whole volume, the grey value repeated to three channels, the channel means 0.406, 0.456, 0.485
  subtracted (BGR order), no resizing, layer4 averaged over the slice; one FID per plane and their mean.

The array orders are those in which each peer's loader reads a NIfTI file that generate.py writes (packed volumes
are [D, H, W] with axes towards superior, posterior and the patient's left). No protocol resizes anything: the
volumes or slices enter the network at the size the generator makes; the peers' resizing (HA-GAN's cube, WDM-3D's
padding and 2x average pooling, BrainLDM's crop, MAISI's 1 mm resampling and 512^3 pad/crop) is data preparation,
done when packing (docs/metrics.md says how). Generated volumes reach every metric of this project quantised to 8
bits (metric_utils.fake_to_uint8_range); the peers fed floats: the difference is below half a grey level.

Every peer takes unbiased covariances (N - 1) and the Frechet distance with scipy's sqrtm of the covariance product.
Here the trace of that square root is computed exactly from symmetric eigendecompositions (or, with few samples, the
singular values of the centred feature products): the same number, to the accuracy of sqrtm, which on this
project's 2-core machine takes over two minutes for a 2048 x 2048 product and is least accurate when there are
fewer samples than features.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import torch

import dnnlib

from . import fid3d, metric_utils, resnet2d

MEDICALNET = 'MedicalNet weights (--medicalnet)'
RADIMAGENET = 'RadImageNet weights (--radimagenet)'
MEDICALNET_SOURCE = 'Tencent/MedicalNet (MedicalNet_pytorch_files, pretrain/)'
RADIMAGENET_SOURCE = 'RadImageNet-ResNet50_notop.pth, the PyTorch conversion in the Warvito/radimagenet-models hub'
MAISI_PLANES = ('xy', 'yz', 'zx')
MAISI_CHANNEL_MEANS = (0.406, 0.456, 0.485)  # Subtracted from the channels in BGR order, as MAISI does.
LOW_RANK_ROWS = 2048  # Up to this many feature rows per set, the rows are kept for the exact low-rank FID.


@dataclasses.dataclass(frozen=True)
class Protocol:
    """What a peer does, as recorded with each result."""
    paper: str
    code: str           # Repository @ commit: the files that were read and run.
    backbone: str
    weights: str        # The file the peer loaded.
    normalisation: str
    layout: str         # The array order the network sees, in terms of a packed volume's axes.
    resizing: str
    pooling: str
    num_gen: int        # Generated samples in the peer's code (default of its script).
    num_real: str


_MEDICALNET_POOL = 'layer4 averaged over its whole map (adaptive average pool), 2048-d'
PROTOCOLS = {
    'hagan': Protocol(
        paper='HA-GAN (Sun et al., IEEE JBHI 2022); also 3D-MedDiffusion (Wang et al.), which uses HA-GAN\'s code',
        code='batmanlab/HA-GAN@1d4f22646412b726811a69aa455a835d96d363d4 evaluation/fid_score.py, '
             'evaluation/resnet3D.py',
        backbone='medicalnet-resnet50', weights='resnet_50.pth',
        normalisation='none: the volume in [-1, 1] (stored x * 2 / 255 - 1)',
        layout='[D, H, W] = (z, y, x), SimpleITK array order', resizing='none', pooling=_MEDICALNET_POOL,
        num_gen=2048, num_real='the training fold'),
    'wdm': Protocol(
        paper='WDM-3D (Friedrich et al., DGM4MICCAI 2024)',
        code='pfriedri/wdm-3d@a93a7ef70849566a4a0a02b5aa27a8a92645b867 eval/fid.py, eval/models/resnet.py',
        backbone='medicalnet-resnet50', weights='resnet_50_23dataset.pth',
        normalisation='[0, 1] (stored x / 255; the peer\'s samples are (x + 1) / 2)',
        layout='[W, H, D] = (x, y, z), nibabel array order', resizing='none', pooling=_MEDICALNET_POOL,
        num_gen=1000, num_real='1000'),
    'brainldm': Protocol(
        paper='Brain LDM (Pinaya et al., DGM4MICCAI 2022)',
        code='Warvito/generative_brain@31eb042323907e86c059c599f4789637fa244009 src/python/testing/compute_fid.py '
             '(model: Warvito/MedicalNet-models@a76edd352306a7fb73f1c66b02d86fc8585e25da)',
        backbone='medicalnet-resnet50', weights='resnet_50_23dataset.pth',
        normalisation='MONAI NormalizeIntensity: (x - mean) / std over the volume, population std (1 if 0)',
        layout='[W, H, D] = (x, y, z), nibabel array order', resizing='none', pooling=_MEDICALNET_POOL,
        num_gen=1000, num_real='1000 test volumes'),
    'maisi': Protocol(
        paper='MAISI (Guo et al., WACV 2025)',
        code='NVIDIA-Medtech/NV-Generate-CTMR@da438fec6484cdb6f421f8c7051d954ebefff730 scripts/compute_fid_2-5d_ct.py '
             '(as Project-MONAI/tutorials generation/maisi; model: '
             'Warvito/radimagenet-models@0639bcaa1d7ac6a92a2ba1629603cb58da61d6c5)',
        backbone='radimagenet-resnet50', weights='RadImageNet-ResNet50_notop.pth',
        normalisation='per volume and plane: min-max of the slice stack to [0, 1] ((x - min) / (max - min + 1e-10)), '
                      'grey repeated to 3 channels, 0.406, 0.456, 0.485 subtracted (BGR)',
        layout='RAS [X, Y, Z] = the packed [D, H, W] flipped on H and W and transposed (MONAI Orientation RAS); '
               'XY slices along Z, YZ along X, ZX along Y',
        resizing='none (slices at their stored size)', pooling='layer4 averaged over each slice, 2048-d per slice',
        num_gen=100, num_real='100 (the first of the sorted file list)'),
}
MEDICALNET_PEERS = ('hagan', 'wdm', 'brainldm')
STATISTICS = 'unbiased covariances (N - 1); Frechet distance with the exact trace of sqrtm(S_gen S_real)'

#----------------------------------------------------------------------------
# Frechet distance.


def _rows_and_mean(stats: metric_utils.FeatureStats) -> tuple[np.ndarray, np.ndarray]:
    rows = stats.get_all_torch().double().numpy()
    return rows, rows.mean(axis=0)


def _unbiased_mean_cov(stats: metric_utils.FeatureStats) -> tuple[np.ndarray, np.ndarray]:
    mean, cov = stats.get_mean_cov()  # Biased: sum / N.
    return mean, cov * (stats.num_items / (stats.num_items - 1))


def _sqrt_trace_from_covariances(s1: np.ndarray, s2: np.ndarray) -> float:
    # sqrtm(S1 S2) has the eigenvalues of S1^1/2 S2 S1^1/2, which is symmetric positive semi-definite.
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = root @ s2 @ root
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum())


def frechet_distance_unbiased(gen: metric_utils.FeatureStats, real: metric_utils.FeatureStats) -> float:
    """|mu_g - mu_r|^2 + Tr(S_g + S_r - 2 sqrtm(S_g S_r)) with unbiased covariances (N - 1), as the peers compute it.

    With every row kept (capture_all) the trace term is the sum of the singular values of A_g A_r^T, A = the centred
    rows / sqrt(N - 1) (S = A^T A, and S_g S_r shares its non-zero eigenvalues with (A_g A_r^T)(A_g A_r^T)^T);
    otherwise it comes from the covariances by two symmetric eigendecompositions.
    """
    for stats in (gen, real):
        if stats.num_items < 2:
            raise ValueError(f'an unbiased covariance needs at least 2 feature rows, got {stats.num_items}')
    if gen.capture_all and real.capture_all:
        (x1, mu1), (x2, mu2) = _rows_and_mean(gen), _rows_and_mean(real)
        a1 = (x1 - mu1) / np.sqrt(x1.shape[0] - 1)
        a2 = (x2 - mu2) / np.sqrt(x2.shape[0] - 1)
        trace1, trace2 = float(np.sum(a1 * a1)), float(np.sum(a2 * a2))
        sqrt_trace = float(np.linalg.svd(a1 @ a2.T, compute_uv=False).sum())
    else:
        (mu1, s1), (mu2, s2) = _unbiased_mean_cov(gen), _unbiased_mean_cov(real)
        trace1, trace2 = float(np.trace(s1)), float(np.trace(s2))
        sqrt_trace = _sqrt_trace_from_covariances(s1, s2)
    diff = mu1 - mu2
    return float(diff @ diff + trace1 + trace2 - 2 * sqrt_trace)

#----------------------------------------------------------------------------
# Input preparation: uint8-range volumes [N, 1, D, H, W] -> what each peer's network sees.


def _xyz(x: torch.Tensor) -> torch.Tensor:
    """[N, 1, D, H, W] -> [N, 1, W, H, D]: the (x, y, z) array order of nibabel and MONAI's loaders."""
    return x.permute(0, 1, 4, 3, 2)


def prepare_medicalnet_input(peer: str, volumes: torch.Tensor) -> torch.Tensor:
    """One channel of uint8-range volumes [N, 1, D, H, W] -> the peer's network input."""
    x = volumes.float()
    if peer == 'hagan':
        return metric_utils.uint8_range_to_unit(x)
    if peer == 'wdm':
        return _xyz(x / 255)
    if peer == 'brainldm':
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        std = x.std(dim=(2, 3, 4), keepdim=True, unbiased=False)
        return _xyz((x - mean) / torch.where(std == 0, torch.ones_like(std), std))
    raise ValueError(f'no MedicalNet protocol "{peer}"; expected one of {", ".join(MEDICALNET_PEERS)}')


def to_ras(volumes: torch.Tensor) -> torch.Tensor:
    """[N, D, H, W] (towards S, P, L) -> [N, X, Y, Z] (towards R, A, S), as MONAI's Orientation('RAS') reads it."""
    return volumes.flip(2, 3).permute(0, 3, 2, 1)


def centre_range(n: int, centre_percent: int | None) -> range:
    """The slice indices MAISI keeps along an axis of n slices: all, or its centre_slices_ratio around the middle."""
    if centre_percent is None:
        return range(n)
    ratio = centre_percent / 100
    return range(int((1.0 - ratio) / 2.0 * n), int((1.0 + ratio) / 2.0 * n))


def maisi_slice_count(plane: str, img_shape: Sequence[int], centre_percent: int | None = None,
                      metric: str = 'fid25d_maisi') -> int:
    """How many slices of a volume of shape (..., D, H, W) MAISI measures in a plane: XY along D (z), YZ along W
    (x), ZX along H (y)."""
    D, H, W = (int(s) for s in img_shape[-3:])
    n = dict(xy=D, yz=W, zx=H)[plane]
    count = len(centre_range(n, centre_percent))
    if count == 0:
        raise ValueError(f'{metric}: the central {centre_percent} % of {n} slices holds no slice')
    return count


def maisi_plane_slices(ras: torch.Tensor, plane: str, centre_percent: int | None = None) -> torch.Tensor:
    """The slices of one plane of one RAS volume [X, Y, Z] -> [S, a, b], in index order along the sliced axis."""
    X, Y, Z = ras.shape
    if plane == 'xy':
        return ras[:, :, list(centre_range(Z, centre_percent))].permute(2, 0, 1)  # [Z, X, Y]
    if plane == 'yz':
        return ras[list(centre_range(X, centre_percent))]                         # [X, Y, Z]
    if plane == 'zx':
        return ras[:, list(centre_range(Y, centre_percent))].permute(1, 0, 2)    # [Y, X, Z]
    raise ValueError(f'MAISI plane "{plane}" is not one of {", ".join(MAISI_PLANES)}')


def maisi_normalise(slices: torch.Tensor) -> torch.Tensor:
    """A volume's slice stack [S, a, b] -> [S, 3, a, b]: min-max over the stack, grey to 3 channels, means off."""
    x = slices.float()
    lo, hi = x.min(), x.max()
    x = (x - lo) / (hi - lo + 1e-10)
    means = torch.tensor(MAISI_CHANNEL_MEANS, dtype=x.dtype, device=x.device).reshape(1, 3, 1, 1)
    return x[:, None].expand(-1, 3, -1, -1) - means

#----------------------------------------------------------------------------
# Featurizers.


def _fetch(url_or_path: str | None, what: str, metric: str, peer_weights: str, source: str) -> str:
    if not url_or_path:
        raise OSError(f'{metric} needs {peer_weights} (from {source}): pass its path with '
                      f'{what[what.index("(") + 1:-1]}')
    try:
        return metric_utils.fetch_file(url_or_path, what)
    except OSError as e:
        raise OSError(f'{e} ({metric} uses {peer_weights} from {source})') from None


class PeerMedicalNetFeaturizer(metric_utils.Featurizer):
    """One 2048-d row per volume channel: MedicalNet ResNet-50 on the peer's input, layer4 averaged."""

    def __init__(self, peer: str, weights_url: str | None, device: torch.device, metric: str,
                 batch_size: int = 2) -> None:
        self.peer = peer
        self.protocol = PROTOCOLS[peer]
        self.weights_file = _fetch(weights_url, MEDICALNET, metric, self.protocol.weights, MEDICALNET_SOURCE)
        self.net = fid3d.get_medicalnet(self.weights_file, 50, device)
        self.batch_size = batch_size
        self.name = f'medicalnet50-{peer}'

    def cache_key(self) -> dict:
        p = self.protocol
        return dict(peer=self.peer, normalisation=p.normalisation, layout=p.layout, pooling=p.pooling)

    def input_files(self) -> dict[str, str]:
        return {self.name: self.weights_file}

    def __call__(self, volumes: torch.Tensor) -> dict[metric_utils.View, torch.Tensor]:
        features = {}
        for c in range(volumes.shape[1]):
            x = prepare_medicalnet_input(self.peer, volumes[:, c:c + 1])
            rows = [self.net.features(x[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
            features[('volume', c)] = torch.cat(rows).float()[:, None]  # [N, F] -> [N, 1, F]
        return features


_radimagenet_cache: dict[tuple[str, torch.device], resnet2d.RadImageNetResNet50] = {}


def get_radimagenet(path: str, device: torch.device | str) -> resnet2d.RadImageNetResNet50:
    """RadImageNet ResNet-50 for a weights file, loaded once per (file content, device)."""
    key = (dnnlib.util.content_identity(path)['sha256'], torch.device(device))
    if key not in _radimagenet_cache:
        _radimagenet_cache[key] = resnet2d.load_radimagenet(path, device)
    return _radimagenet_cache[key]


class MaisiFeaturizer(metric_utils.Featurizer):
    """Views (plane, channel) for the planes xy, yz, zx; one 2048-d row per slice."""

    def __init__(self, weights_url: str | None, device: torch.device, metric: str,
                 centre_percent: int | None = None, max_pixels: int = 1 << 22) -> None:
        self.protocol = PROTOCOLS['maisi']
        self.weights_file = _fetch(weights_url, RADIMAGENET, metric, self.protocol.weights, RADIMAGENET_SOURCE)
        self.net = get_radimagenet(self.weights_file, device)
        self.metric = metric
        self.centre_percent = centre_percent
        self.max_pixels = max_pixels  # Slices per forward pass: at most this many pixels.
        self.name = 'radimagenet50-maisi' + (f'-c{centre_percent}' if centre_percent else '')

    def views(self, num_channels: int) -> list[metric_utils.View]:
        return [(plane, c) for c in range(num_channels) for plane in MAISI_PLANES]

    def rows_per_volume(self, view: metric_utils.View, img_shape: Sequence[int]) -> int:
        return maisi_slice_count(view[0], img_shape, self.centre_percent, self.metric)

    def cache_key(self) -> dict:
        p = self.protocol
        return dict(peer='maisi', normalisation=p.normalisation, layout=p.layout, pooling=p.pooling,
                    centre_percent=self.centre_percent)

    def input_files(self) -> dict[str, str]:
        return {self.name: self.weights_file}

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        step = max(1, self.max_pixels // (images.shape[-1] * images.shape[-2]))
        return torch.cat([self.net.features(images[i:i + step]) for i in range(0, images.shape[0], step)])

    def __call__(self, volumes: torch.Tensor) -> dict[metric_utils.View, torch.Tensor]:
        features = {}
        for c in range(volumes.shape[1]):
            ras = to_ras(volumes[:, c])  # [N, X, Y, Z]
            for plane in MAISI_PLANES:
                stacks = [maisi_normalise(maisi_plane_slices(v, plane, self.centre_percent)) for v in ras]
                f = self._features(torch.cat(stacks))  # [N * S, 3, a, b] -> [N * S, F]
                features[(plane, c)] = f.float().reshape(len(stacks), stacks[0].shape[0], -1)  # [N, S, F]
        return features

#----------------------------------------------------------------------------
# The metrics.


def _stats_kwargs(rows: int) -> dict:
    return dict(capture_mean_cov=True, capture_all=rows <= LOW_RANK_ROWS)


def _frechet_per_view(opts: metric_utils.MetricOptions, featurizer: metric_utils.Featurizer,
                      num_gen: int) -> tuple[dict, dict, dict]:
    dataset = metric_utils.open_dataset(opts)
    views = featurizer.views(dataset.num_channels)
    per_volume = max(featurizer.rows_per_volume(v, dataset.img_shape) for v in views)
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, **_stats_kwargs(len(dataset) * per_volume))
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=num_gen,
                                                           **_stats_kwargs(num_gen * per_volume))
    values = metric_utils.on_rank0(opts, lambda: {
        view: frechet_distance_unbiased(gen[view], real[view]) for view in real})
    return values, real, gen


def _rows_per_view(stats: dict, channel_names: Sequence[str]) -> dict[str, int]:
    """Feature rows per view: {'volume': N} or {'xy': ..., 'yz': ..., 'zx': ...}, with channel names if several."""
    several = len({c for _, c in stats}) > 1
    return {f'{plane}_{channel_names[c]}' if several else plane: int(s.num_items) for (plane, c), s in stats.items()}


def _details(opts: metric_utils.MetricOptions, peer: str, weights_file: str, num_gen: int, real: dict,
             gen: dict, channel_names: Sequence[str]) -> dict:
    p = PROTOCOLS[peer]
    return dict(protocol=peer, paper=p.paper, peer_code=p.code, backbone=p.backbone, weights=weights_file,
                weights_sha256=dnnlib.util.content_identity(weights_file)['sha256'], peer_weights=p.weights,
                normalisation=p.normalisation, layout=p.layout, resizing=p.resizing, pooling=p.pooling,
                statistics=STATISTICS, num_gen_volumes=num_gen, peer_num_gen=p.num_gen, peer_num_real=p.num_real,
                num_real_volumes=len(metric_utils.open_dataset(opts)),
                num_gen_rows=_rows_per_view(gen, channel_names), num_real_rows=_rows_per_view(real, channel_names))


def compute_fid3d_peer(opts: metric_utils.MetricOptions, num_gen: int | None, peer: str,
                       metric: str = 'fid3d') -> tuple[dict[str, float], dict]:
    """3D FID of num_gen generated volumes (None: the peer's count) against the whole dataset, peer's protocol."""
    num_gen = num_gen or PROTOCOLS[peer].num_gen
    featurizer = PeerMedicalNetFeaturizer(peer, opts.detector_urls.get('medicalnet'), opts.device, metric)
    values, real, gen = _frechet_per_view(opts, featurizer, num_gen)
    channel_names = metric_utils.channel_names_of(metric_utils.open_dataset(opts))
    return (metric_utils.combine_views(values, channel_names),
            _details(opts, peer, featurizer.weights_file, num_gen, real, gen, channel_names))


def compute_fid25d_maisi(opts: metric_utils.MetricOptions, num_gen: int | None, centre_percent: int | None = None,
                         metric: str = 'fid25d_maisi') -> tuple[dict[str, float], dict]:
    """MAISI's 2.5D FID: one FID per plane (xy, yz, zx) and their mean, num_gen generated volumes (None: 100)."""
    num_gen = num_gen or PROTOCOLS['maisi'].num_gen
    featurizer = MaisiFeaturizer(opts.detector_urls.get('radimagenet'), opts.device, metric, centre_percent)
    values, real, gen = _frechet_per_view(opts, featurizer, num_gen)
    channel_names = metric_utils.channel_names_of(metric_utils.open_dataset(opts))
    details = _details(opts, 'maisi', featurizer.weights_file, num_gen, real, gen, channel_names)
    details['slices'] = 'every slice' if centre_percent is None else f'the central {centre_percent} % of each axis'
    return metric_utils.combine_views(values, channel_names), details
