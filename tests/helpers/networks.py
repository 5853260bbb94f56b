# SPDX-License-Identifier: Apache-2.0
"""Tiny untrained generators with a known volume record, their snapshot pickles, and how to compare the volumes the
tools write with what the generator computes."""

import pickle

import numpy as np
import torch

from tests.helpers.volumes import SHAPE_XYZ
from training import generation
from training.networks import Generator
from volumes.contract import IntensityMapping, VolumeInfo

SPACING = (0.5, 0.75, 3.0)                                 # (x, y, z) mm
SHAPE = (8, 12, 16)                                        # (D, H, W): all different, so axis mix-ups show
ROTATED = [0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0]  # An in-plane rotated LPS direction (row-major).
CENTRE = (12.5, -40.0, 7.25)                               # Where the training volumes sat (LPS, mm).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def tiny_generator(c_dim: int = 0, noise_strength: float = 0.0, direction=ROTATED, dtype: str = 'uint8',
                   centre=CENTRE, percentiles=(0.5, 99.5)) -> Generator:
    """An untrained generator of SHAPE volumes at SPACING, the same weights at every call (seeded)."""
    torch.manual_seed(0)
    info = VolumeInfo(spacing=SPACING, direction=direction, centre=centre,
                      intensity=IntensityMapping('percentile', *percentiles, dtype))
    G = Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_shape=SHAPE, img_channels=1,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16),
                  volume_info=info.to_dict()).eval()
    with torch.no_grad():  # Untrained layers have zero noise strength; some tests need the noise to matter.
        for module in G.modules():
            if hasattr(module, 'noise_strength'):
                module.noise_strength.fill_(noise_strength)
    return G


def tiny_network(info: VolumeInfo) -> Generator:
    """An untrained generator of SHAPE_XYZ volumes for the record `info`: image channels plus one channel per label
    value."""
    torch.manual_seed(0)
    return Generator(z_dim=8, c_dim=0, w_dim=8, img_shape=SHAPE_XYZ[::-1], img_channels=info.num_channels,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=128, channel_max=16),
                     volume_info=info.to_dict()).eval()


def write_snapshot(path, G, data_path=None) -> str:
    """A snapshot pickle of G as training writes it; data_path names its training data (None: no dataset)."""
    training_set_kwargs = {} if data_path is None else dict(class_name='training.dataset.VolumeFolderDataset',
                                                            path=str(data_path))
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=None, G_ema=G, augment_pipe=None, training_set_kwargs=training_set_kwargs), f)
    return str(path)


# On the CPU the CLIs and the checks here compute identically, so volumes must match exactly. On a GPU (TF32,
# other kernels per batch size) the same volume may round to a neighbouring stored value, so allow 1% of the range.
TOLERANCE = 0.01 if torch.cuda.is_available() else 0.0


def same_volume(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape and dtype, and voxels equal up to TOLERANCE of the dtype's range."""
    tol = TOLERANCE * np.iinfo(a.dtype).max
    return a.shape == b.shape and a.dtype == b.dtype and np.abs(a.astype(np.int64) - b.astype(np.int64)).max() <= tol


def different_volumes(a: np.ndarray, b: np.ndarray) -> bool:
    """Voxels differ by more than 1% of the range on average: clearly not the same volume."""
    return np.abs(a.astype(np.int64) - b.astype(np.int64)).mean() > 0.01 * np.iinfo(a.dtype).max


def expected_ras_affine(direction, spacing=SPACING, shape_dhw=SHAPE, centre=CENTRE) -> np.ndarray:
    """The NIfTI (RAS) affine of a volume written in LPS with the given direction, its centre at `centre`."""
    lps = np.eye(4)
    lps[:3, :3] = np.reshape(direction, (3, 3)) @ np.diag(spacing)
    centre_voxel = (np.asarray(shape_dhw[::-1]) - 1) / 2  # (x, y, z)
    lps[:3, 3] = np.asarray(centre) - lps[:3, :3] @ centre_voxel
    return LPS_TO_RAS @ lps


def stored_uint(G, seed: int, dtype: str, noise_mode: str = 'const') -> np.ndarray:
    """The [D, H, W] volume of one seed, computed here from G, in the stored range."""
    with torch.no_grad():
        volume = G(generation.seed_latents([seed], G.z_dim), torch.zeros([1, G.c_dim]), noise_mode=noise_mode)
    max_value = np.iinfo(dtype).max
    return np.rint((volume[0, 0].numpy() + 1) * max_value / 2).clip(0, max_value).astype(dtype)
