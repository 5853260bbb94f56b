# SPDX-License-Identifier: Apache-2.0
"""FRD v1 and v0 (the Frechet Radiomics Distance, frd-score 1.0.1's definitions) of generated volumes against the
whole dataset, one value per channel and their mean (metrics/radiomics/frd.py has the definitions).

Volumes are measured as the other metrics see them, in the uint8 range [0, 255] (the real ones scaled by
255 / max_value, the generated ones quantised to 8 bits), with the dataset's voxel spacing. For a uint8 dataset
these are the values of the files generate.py writes (up to rounding ties), so `radiomics.py --frd` on those files
gives the same features. The real volumes are the reference set (v1 z-scores both sets by their statistics). Real
features are cached by the dataset's content like the other metrics' statistics.

Cost: all on the CPU, one volume after another, about 0.5 to 5 s per volume and version at the usual sizes; for
thousands of volumes, generate.py and `radiomics.py --frd --workers N` spread the work over processes.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import SimpleITK as sitk
import torch

from . import metric_utils
from .radiomics import frd as frd_lib

DEFINITION = 'frd-score 1.0.1 (PyRadiomics features, no mask)'
INTENSITIES = 'uint8 range [0, 255], the dataset spacing'


def volume_image(volume: np.ndarray, spacing_xyz) -> sitk.Image:
    """A [D, H, W] array as a float32 SimpleITK image with the given spacing (x, y, z) mm."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing_xyz])
    return image


class FrdFeaturizer(metric_utils.Featurizer):
    """One row per volume channel: the FRD feature vector of one version."""

    def __init__(self, version: str, spacing_xyz) -> None:
        self.definition = frd_lib.definition(version)
        self.version = version
        self.spacing = tuple(float(s) for s in spacing_xyz)
        self.name = f'frd{version}'

    def cache_key(self) -> dict:
        names = hashlib.md5(json.dumps(self.definition.names).encode()).hexdigest()
        return dict(definition=DEFINITION, version=self.version, settings=self.definition.options.settings.to_dict(),
                    feature_names=names, exclude_corner=self.definition.exclude_corner, intensities=INTENSITIES,
                    spacing=self.spacing)

    def __call__(self, volumes: torch.Tensor) -> dict[metric_utils.View, torch.Tensor]:
        x = volumes.detach().cpu().numpy()  # [N, C, D, H, W]
        size = 'x'.join(str(n) for n in x.shape[:1:-1])
        name = f'FRD {self.version} of a {size} volume of {"x".join(f"{s:g}" for s in self.spacing)} mm'
        out = {}
        for c in range(x.shape[1]):
            rows = [list(frd_lib.volume_features(volume_image(v, self.spacing), self.version, name).values())
                    for v in x[:, c]]
            out[('volume', c)] = torch.tensor(rows, dtype=torch.float64)[:, None]  # [N, F] -> [N, 1, F]
        return out


def dataset_spacing(dataset) -> tuple[float, float, float]:
    """The dataset's voxel spacing (x, y, z) mm; 1 mm where it records none."""
    info = getattr(dataset, 'volume_info', None)
    return tuple(info.spacing) if info is not None else (1.0, 1.0, 1.0)


def compute_frd(opts: metric_utils.MetricOptions, version: str, num_gen: int | None = None
                ) -> tuple[dict[str, float], dict]:
    """FRD `version` of num_gen generated volumes (None: as many as the dataset holds) against every real one."""
    dataset = metric_utils.open_dataset(opts)
    num_gen = num_gen or len(dataset)
    featurizer = FrdFeaturizer(version, dataset_spacing(dataset))
    real = metric_utils.compute_feature_stats_for_dataset(opts, featurizer, capture_all=True)
    gen = metric_utils.compute_feature_stats_for_generator(opts, featurizer, num_gen=num_gen, capture_all=True)
    results = metric_utils.on_rank0(opts, lambda: {
        view: frd_lib.frd(real[view].get_all(), gen[view].get_all(), version) for view in real})
    values = {view: r.value for view, r in results.items()}
    first = next(iter(results.values()))
    channel_names = metric_utils.channel_names_of(dataset)
    details = dict(definition=DEFINITION, version=version, reference='real volumes', intensities=INTENSITIES,
                   spacing=list(featurizer.spacing), num_real_volumes=first.num_first, num_gen_volumes=first.num_second,
                   num_features={channel_names[c]: r.num_features for (_, c), r in results.items()})
    return metric_utils.combine_views(values, channel_names), details
