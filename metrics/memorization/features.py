# SPDX-License-Identifier: Apache-2.0
"""Feature spaces for the audit, on the detectors the metrics already load (metrics/fid3d.py, metric_utils.py):

- medicalnetD: MedicalNet ResNet-D features of each image channel (z-scored per volume, as 3D FID), concatenated;
- inception: Inception pool features of every axial slice, averaged per volume and channel, concatenated.

Volumes enter in stored units and are brought to the metrics' uint8 range (value * 255 / max_value), as real
volumes are for the metrics; similarity is the cosine of the feature vectors.
"""

from __future__ import annotations

import torch

from metrics import fid3d, metric_utils


class FeatureSpace:
    """A named map from stored volumes [B, C, D, H, W] to feature rows [B, F]."""

    def __init__(self, name: str, description: str, featurizer: metric_utils.Featurizer, max_value: int,
                 device: torch.device) -> None:
        self.name, self.description = name, description
        self.featurizer, self.max_value, self.device = featurizer, max_value, device

    @torch.no_grad()
    def __call__(self, stored: torch.Tensor) -> torch.Tensor:
        volumes = metric_utils.real_to_uint8_range(stored.to(self.device), self.max_value)
        features = self.featurizer(volumes)  # {(plane or 'volume', channel): [B, rows, F]}
        rows = [features[view].mean(dim=1) for view in sorted(features, key=lambda v: v[1])]  # Per volume [B, F].
        return torch.cat(rows, dim=1).float().cpu()


def medicalnet_space(weights: str, depth: int, max_value: int, device: torch.device) -> FeatureSpace:
    """MedicalNet ResNet-`depth` features. Raises OSError or ValueError (one line) for missing or wrong weights."""
    featurizer = fid3d.MedicalNetFeaturizer(weights, depth, device)
    description = (f'medicalnet{depth} space: cosine similarity of MedicalNet ResNet-{depth} features '
                   f'({fid3d.NORMALISATION})')
    return FeatureSpace(f'medicalnet{depth}', description, featurizer, max_value, device)


def inception_space(detector: str, max_value: int, device: torch.device) -> FeatureSpace:
    """Inception pool features of the axial slices, averaged per volume. Raises OSError or ValueError (one line)."""
    featurizer = metric_utils.SliceFeaturizer(detector, dict(return_features=True), 'all', device,
                                              what=metric_utils.INCEPTION)
    return FeatureSpace('inception', 'inception space: cosine similarity of Inception features of every axial slice, '
                        'averaged per volume', featurizer, max_value, device)
