# SPDX-License-Identifier: Apache-2.0
"""3D FID on MedicalNet features: the Frechet distance between globally average-pooled layer4 features of real
and generated volumes, one value per channel (each channel is fed as a 1-channel volume) and their mean.

Normalisation (recorded in the result): each volume channel is z-scored on its own, (x - mean) / (std + 1e-5)
over all its voxels (MAISI's convention; MONAI's PerceptualLoss and BrainLDM also use whole-volume z-scores).
MedicalNet FIDs are comparable only with the same backbone, weights and normalisation, so all three are recorded.
"""

from __future__ import annotations

import torch

import dnnlib

from . import medicalnet, metric_utils
from .frechet_inception_distance import frechet_distance

NORMALISATION = 'per-volume z-score (x - mean) / (std + 1e-5)'

_network_cache: dict[tuple[str, int, torch.device], medicalnet.MedicalNetResNet] = {}


def zscore(volumes: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """[N, C, D, H, W] -> each (volume, channel) shifted and scaled to mean 0, std 1 over D, H, W."""
    dims = (2, 3, 4)
    mean = volumes.mean(dim=dims, keepdim=True)
    std = volumes.std(dim=dims, keepdim=True, unbiased=False)
    return (volumes - mean) / (std + eps)


def get_medicalnet(url_or_path: str | None, depth: int, device: torch.device) -> medicalnet.MedicalNetResNet:
    """The MedicalNet backbone for a weights URL or path, loaded once per (file content, depth, device)."""
    if not url_or_path:
        raise OSError(f'3D FID needs MedicalNet ResNet-{depth} weights (e.g. resnet_{depth}_23dataset.pth from '
                      f'Tencent/MedicalNet): pass their path or URL with --medicalnet')
    path = metric_utils.fetch_file(url_or_path, 'MedicalNet weights (--medicalnet)')
    key = (dnnlib.util.content_identity(path)['sha256'], depth, torch.device(device))
    if key not in _network_cache:
        _network_cache[key] = medicalnet.load_medicalnet(path, depth, device)
    return _network_cache[key]


class MedicalNetFeaturizer(metric_utils.Featurizer):
    """One [F] feature row per volume channel: MedicalNet(z-score(channel)) average-pooled over D, H, W."""

    def __init__(self, weights_url: str | None, depth: int, device: torch.device, batch_size: int = 2) -> None:
        self.weights_url = weights_url
        self.depth = depth
        self.batch_size = batch_size
        self.net = get_medicalnet(weights_url, depth, device)
        self.name = f'medicalnet{depth}'

    def cache_key(self) -> dict:
        return dict(depth=self.depth, normalisation=NORMALISATION)

    def input_files(self) -> dict[str, str]:
        return {self.name: metric_utils.fetch_file(self.weights_url, 'MedicalNet weights (--medicalnet)')}

    def __call__(self, volumes: torch.Tensor) -> dict[metric_utils.View, torch.Tensor]:
        x = zscore(volumes)
        features = {}
        for c in range(x.shape[1]):
            channel = x[:, c:c + 1]  # [N, 1, D, H, W]
            rows = [self.net.features(channel[i:i + self.batch_size]) for i in range(0, x.shape[0], self.batch_size)]
            features[('volume', c)] = torch.cat(rows).float()[:, None]  # [N, F] -> [N, 1, F]
        return features


def compute_fid3d(opts: metric_utils.MetricOptions, num_gen: int, depth: int = 10) -> tuple[dict[str, float], dict]:
    """3D FID of num_gen generated volumes against the whole dataset on MedicalNet ResNet-`depth` features."""
    featurizer = MedicalNetFeaturizer(opts.detector_urls.get('medicalnet'), depth, opts.device)
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, capture_mean_cov=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=num_gen, capture_mean_cov=True)
    values = metric_utils.on_rank0(opts, lambda: {
        view: frechet_distance(*gen[view].get_mean_cov(), *real[view].get_mean_cov()) for view in real})
    channel_names = metric_utils.channel_names_of(metric_utils.open_dataset(opts))
    details = dict(backbone=f'medicalnet-resnet{depth}', weights=featurizer.weights_url,
                   normalisation=NORMALISATION, num_features=featurizer.net.num_features, num_gen_volumes=num_gen,
                   num_real_volumes=int(next(iter(real.values())).num_items))
    return metric_utils.combine_views(values, channel_names), details
