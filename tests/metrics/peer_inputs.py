# SPDX-License-Identifier: Apache-2.0
"""Seeded weights and volumes for checking the peer metric protocols against the peers' own code.

Full ResNet-50 weights are 100-200 MB, so they are not committed: they are drawn here from NumPy's legacy
RandomState (MT19937, whose stream NumPy keeps fixed across versions and platforms), in float64 and then rounded to
float32, so every machine makes the same bits. The volumes are committed (tests/data/peers/volumes.npz).

Run as a script it writes the weights files and the volumes for tests/data/peers/run_peers.py:
    python -m tests.metrics.peer_inputs OUTDIR
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch

from metrics import medicalnet, resnet2d
from torch_utils import persistence

SEED = 20270


def seeded_state_dict(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Weights for `net`'s state dict, drawn in the order of its sorted key names.

    Convolutions: uniform in +-sqrt(6 / fan_in) (He's variance); their biases uniform in +-0.1. Batch norm: weight
    in [0.5, 1.5], bias and running mean in +-0.1, running variance in [0.5, 1.5]; the last batch norm of each
    residual branch (bn3) has its weight and bias scaled by 0.1 (torchvision's zero_init_residual, not quite zero),
    so that sixteen residual blocks keep the features near 1 as trained networks do: with features in the hundreds,
    the peers' check of sqrtm's imaginary part (an absolute 1e-3) fails on these few samples. Counters are 0.
    """
    rng = np.random.RandomState(seed)
    state = {}
    for key, value in sorted(net.state_dict().items()):
        shape = tuple(value.shape)
        if not value.is_floating_point():
            state[key] = torch.zeros_like(value)
            continue
        u = rng.random_sample(shape) if shape else np.float64(rng.random_sample())  # [0, 1)
        if key.endswith('weight') and len(shape) > 1:
            bound = np.sqrt(6.0 / int(np.prod(shape[1:])))
            draw = (2 * u - 1) * bound
        elif key.endswith('running_var') or key.endswith('weight'):
            draw = 0.5 + u
        else:  # biases and running means
            draw = (2 * u - 1) * 0.1
        if '.bn3.' in key and not key.endswith(('running_mean', 'running_var')):
            draw = draw * 0.1
        state[key] = torch.from_numpy(np.asarray(draw, dtype=np.float32)).reshape(shape)
    return state


def medicalnet50_state() -> dict[str, torch.Tensor]:
    """Seeded MedicalNet ResNet-50 (shortcut B) backbone weights, the layout of Tencent's resnet_50*.pth."""
    return seeded_state_dict(medicalnet.MedicalNetResNet(50), SEED)


def radimagenet50_state() -> dict[str, torch.Tensor]:
    """Seeded RadImageNet ResNet-50 weights, the layout of RadImageNet-ResNet50_notop.pth."""
    return seeded_state_dict(resnet2d.RadImageNetResNet50(), SEED + 1)


def save_medicalnet(path: str) -> None:
    """As Tencent publishes them: {'state_dict': ...} with DataParallel's `module.` prefix."""
    torch.save({'state_dict': {f'module.{k}': v for k, v in medicalnet50_state().items()}}, path)


def save_radimagenet(path: str) -> None:
    """As the PyTorch conversion is published: a plain state dict."""
    torch.save(radimagenet50_state(), path)


def make_volumes(seed: int = SEED) -> dict[str, np.ndarray]:
    """Two small sets of uint8 volumes [N, 1, D, H, W] (D, H, W all different, so an axis mix-up shows): 'real'
    smooth blobs with noise, 'fake' the same kind, brighter and noisier. Integer arithmetic only."""
    rng = np.random.RandomState(seed)
    D, H, W = 8, 16, 40
    z, y, x = np.meshgrid(np.arange(D), np.arange(H), np.arange(W), indexing='ij')
    sets = {}
    for name, (count, base, noise) in dict(real=(4, 60, 20), fake=(4, 90, 45)).items():
        volumes = []
        for _ in range(count):
            cz, cy, cx = rng.randint(3, D - 3), rng.randint(6, H - 6), rng.randint(8, W - 8)
            r2 = 4 * (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 // 2
            blob = np.where(r2 < rng.randint(30, 120), 120, 0) + base + rng.randint(0, noise, size=(D, H, W))
            volumes.append(np.clip(blob, 0, 255).astype(np.uint8))
        sets[name] = np.stack(volumes)[:, None]
    return sets


@persistence.persistent_class
class ReplayGenerator(torch.nn.Module):
    """A generator whose calls return the given uint8 volumes [N, C, D, H, W] in turn, scaled so that the metrics'
    8-bit quantisation (floor(x * 127.5 + 128)) gives back exactly those values."""

    def __init__(self, volumes: np.ndarray, z_dim: int = 4) -> None:
        super().__init__()
        self.z_dim, self.c_dim = z_dim, 0
        self.img_channels, self.img_shape = int(volumes.shape[1]), tuple(int(s) for s in volumes.shape[2:])
        self.register_buffer('volumes', (torch.from_numpy(volumes).float() - 127.75) / 127.5)
        self.position = 0

    def forward(self, z: torch.Tensor, c: torch.Tensor, **_kwargs) -> torch.Tensor:
        n = z.shape[0]
        if self.position + n > self.volumes.shape[0]:
            raise ValueError(f'asked for more than the {self.volumes.shape[0]} volumes this generator replays')
        self.position += n
        return self.volumes[self.position - n:self.position]


def volumes_file() -> str:
    # Inside a function: the persistence of ReplayGenerator runs this module's source where __file__ is not set.
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'data', 'peers', 'volumes.npz')


def load_volumes() -> dict[str, np.ndarray]:
    with np.load(volumes_file()) as data:
        return {k: data[k] for k in data.files}


if __name__ == '__main__':
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    save_medicalnet(os.path.join(outdir, 'medicalnet50.pth'))
    save_radimagenet(os.path.join(outdir, 'radimagenet50.pth'))
    np.savez(os.path.join(outdir, 'volumes.npz'), **load_volumes())
    print(f'weights and volumes written to {outdir} (torch {torch.__version__})')
