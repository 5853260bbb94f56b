# SPDX-License-Identifier: Apache-2.0
"""Test doubles for the metrics: a tiny generator, small packed datasets and a tiny TorchScript detector."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import torch

from torch_utils import persistence


@persistence.persistent_class
class FakeGenerator(torch.nn.Module):
    """G(z, c) = tanh(scale * (A z + B c) + offset), reshaped to [N, C, D, H, W]: smooth, seed-dependent volumes."""

    def __init__(self, img_shape: tuple[int, int, int] = (8, 16, 16), img_channels: int = 1, z_dim: int = 8,
                 c_dim: int = 0, offset: float = 0.0, scale: float = 1.0, seed: int = 0) -> None:
        super().__init__()
        self.z_dim, self.c_dim = z_dim, c_dim
        self.img_shape, self.img_channels = tuple(img_shape), img_channels
        self.offset, self.scale = offset, scale
        gen = torch.Generator().manual_seed(seed)
        # Smooth patterns (coarse noise up-sampled 4x), so the volumes have structure for SSIM to see.
        coarse = torch.randn([z_dim + max(c_dim, 1), img_channels] + [max(s // 4, 1) for s in img_shape],
                             generator=gen)
        fine = torch.nn.functional.interpolate(coarse, size=list(img_shape), mode='trilinear', align_corners=True)
        fine = fine.flatten(1).T  # [z_dim + c_dim, C, D, H, W] -> [C*D*H*W, z_dim + c_dim]
        self.register_buffer('A', fine[:, :z_dim].contiguous() / np.sqrt(z_dim))
        self.register_buffer('B', fine[:, z_dim:].contiguous())

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                noise_mode: str = 'random') -> torch.Tensor:
        assert z.shape[1] == self.z_dim and c.shape[1] == self.c_dim
        x = (z * truncation_psi) @ self.A.T
        if self.c_dim:
            x = x + c @ self.B.T
        x = torch.tanh(self.scale * x + self.offset)
        return x.reshape(z.shape[0], self.img_channels, *self.img_shape)  # [N, C*D*H*W] -> [N, C, D, H, W]


def sample_real_volumes(G: FakeGenerator, n: int, seed: int = 1, labels: np.ndarray | None = None) -> np.ndarray:
    """uint8 volumes [n, C, D, H, W] from the generator's own distribution."""
    z = torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed))
    c = torch.from_numpy(labels).float() if labels is not None else torch.zeros([n, G.c_dim])
    with torch.no_grad():
        x = G(z, c)
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()


def write_dataset(path: str, volumes: np.ndarray, labels: list | None = None, channels: list[str] | None = None) -> str:
    """A folder dataset as dataset_tool.py packs it: dataset.json plus one .npy per volume [C, D, H, W]."""
    os.makedirs(path, exist_ok=True)
    names = [f'vol{i:04d}.npy' for i in range(len(volumes))]
    for name, v in zip(names, volumes):
        np.save(os.path.join(path, name), v)
    info = dict(format='stylegan2-ada-3d/1', dtype=str(volumes.dtype), shape=list(volumes.shape[1:]))
    if labels is not None:
        info['labels'] = [[n, lbl] for n, lbl in zip(names, labels)]
    if channels is not None:
        info['channels'] = channels
    with open(os.path.join(path, 'dataset.json'), 'w') as f:
        json.dump(info, f)
    return path


def dataset_kwargs(path: str, **kwargs) -> dict:
    return dict(class_name='training.dataset.VolumeFolderDataset', path=str(path), **kwargs)


class TinyDetector(torch.nn.Module):  # Not persistent: TorchScript cannot compile the persistence wrapper.
    """A TorchScript-able stand-in for the official detectors: checks its input is what the official metrics feed them
    (uint8 NCHW with 3 equal channels) and returns a fixed random projection of 4x4-pooled images as features."""

    def __init__(self, num_features: int = 12, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer('proj', torch.randn([num_features, 3 * 16], generator=gen))

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert return_features, 'the metrics ask for features'
        assert x.dim() == 4 and x.shape[1] == 3, 'expected [N, 3, H, W]'
        assert x.dtype == torch.uint8, 'expected uint8'
        assert bool(torch.equal(x[:, 0], x[:, 1])) and bool(torch.equal(x[:, 0], x[:, 2])), 'expected grey as RGB'
        pooled = torch.nn.functional.adaptive_avg_pool2d(x.float() / 255, [4, 4]).flatten(1)
        return pooled @ self.proj.T


def write_detector(path: str, num_features: int = 12, seed: int = 0) -> str:
    with warnings.catch_warnings():  # TorchScript is deprecated, but it is the official detectors' format.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.jit.script(TinyDetector(num_features, seed)).save(str(path))
    return str(path)
