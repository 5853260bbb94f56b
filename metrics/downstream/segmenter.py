# SPDX-License-Identifier: Apache-2.0
"""The segmenter of the downstream experiment: MONAI's 3D U-Net (or SegResNet) trained with Dice + cross-entropy on
the packed grid, and scored with MONAI's DiceMetric and HausdorffDistanceMetric at the 95th percentile.

Every regime gets the same network, the same number of iterations and the same geometric augmentation (MONAI's
RandAffined: in-plane rotation, in-plane scaling and shift, no flips because left and right may be different labels),
so the training data is the only thing that differs. Runs are reproducible on the CPU: the weights, the minibatch
sampling and the augmentation draw from generators seeded by the run's seed, with PyTorch's deterministic algorithms.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings
from typing import Callable, Iterator

import numpy as np
import torch

from volumes.contract import format_size, to_unit

MODELS = ('unet', 'segresnet')
AUGMENTS = ('affine', 'none')
MAX_LEVELS = 4  # Down-sampling steps of the U-Net at most.


@dataclasses.dataclass(frozen=True)
class TrainOptions:
    """How each segmenter is trained (the same for every regime)."""
    model: str = 'unet'      # 'unet' (MONAI UNet) or 'segresnet' (MONAI SegResNet).
    width: int = 16          # Channels of the first level; doubled at each level below.
    iters: int = 2000        # Optimiser steps.
    batch: int = 2           # Volumes per step.
    lr: float = 1e-3         # Adam's learning rate, annealed to 0 along a cosine.
    augment: str = 'affine'  # 'affine' (RandAffined) or 'none'.

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f'model "{self.model}": expected one of {", ".join(MODELS)}')
        if self.augment not in AUGMENTS:
            raise ValueError(f'augment "{self.augment}": expected one of {", ".join(AUGMENTS)}')
        if self.width < 1 or self.iters < 1 or self.batch < 1 or not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError('width, iters and batch must be positive integers and lr a positive number')

#----------------------------------------------------------------------------
# Networks.


def unet_strides(shape_dhw: tuple[int, int, int], levels: int = MAX_LEVELS) -> list[tuple[int, int, int]]:
    """Per-level (D, H, W) strides: an axis is halved while it is even and its half at least 4 voxels, so thin slabs
    (24 slices of a prostate scan) are down-sampled less often than the in-plane axes; at most `levels` levels."""
    size, strides = list(shape_dhw), []
    for _ in range(levels):
        step = tuple(2 if s % 2 == 0 and s // 2 >= 4 else 1 for s in size)
        if step == (1, 1, 1):
            break
        strides.append(step)
        size = [s // f for s, f in zip(size, step)]
    return strides


def build_model(options: TrainOptions, in_channels: int, num_classes: int,
                shape_dhw: tuple[int, int, int]) -> torch.nn.Module:
    """MONAI's UNet (residual units, instance norm) or SegResNet for volumes of `shape_dhw`, `num_classes` outputs
    (background included)."""
    from monai.networks.nets import SegResNet, UNet
    if options.model == 'unet':
        strides = unet_strides(shape_dhw)
        if not strides:
            raise ValueError(f'volumes of {format_size(shape_dhw)} are too small for the U-Net: no axis can be halved '
                             f'to 4 voxels or more')
        channels = tuple(options.width * 2 ** i for i in range(len(strides) + 1))
        return UNet(spatial_dims=3, in_channels=in_channels, out_channels=num_classes, channels=channels,
                    strides=strides, num_res_units=2, norm='instance')
    # SegResNet halves every axis at each level: as many levels as the smallest axis allows.
    levels = min(MAX_LEVELS - 1, *(_halvings(s) for s in shape_dhw))
    groups = math.gcd(options.width, 8)
    return SegResNet(spatial_dims=3, init_filters=options.width, in_channels=in_channels, out_channels=num_classes,
                     blocks_down=(1, 2, 2, 4)[:levels + 1], blocks_up=(1, 1, 1)[:levels],
                     norm=('GROUP', {'num_groups': groups}))


def _halvings(size: int) -> int:
    count = 0
    while size % 2 == 0 and size // 2 >= 2:
        size //= 2
        count += 1
    return count

#----------------------------------------------------------------------------
# Training.


def augmentation(shape_dhw: tuple[int, int, int], seed: int):
    """MONAI's RandAffined on {'image', 'label'}: in-plane rotation up to 15 degrees, in-plane scaling by up to 10 %
    and shifts of up to 5 % of the in-plane size, each volume with probability 0.8; labels by nearest neighbour."""
    from monai.transforms import RandAffined
    _, h, w = shape_dhw
    transform = RandAffined(keys=('image', 'label'), prob=0.8, rotate_range=(math.pi / 12, 0, 0),
                            scale_range=(0, 0.1, 0.1), translate_range=(0, 0.05 * h, 0.05 * w),
                            mode=('bilinear', 'nearest'), padding_mode=('border', 'zeros'))
    transform.set_random_state(seed=seed)
    return transform


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """PyTorch's deterministic algorithms for the duration (a warning, not an error, where CUDA has none)."""
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark = previous[2]


@contextlib.contextmanager
def untracked_meta() -> Iterator[None]:
    """MONAI's transforms return plain tensors, without the metadata they would otherwise track (twice as fast)."""
    from monai.data import get_track_meta, set_track_meta
    previous = get_track_meta()
    set_track_meta(False)
    try:
        yield
    finally:
        set_track_meta(previous)


def to_tensors(cases: list, max_value: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images [N, C, D, H, W] float32 in [-1, 1] and labels [N, 1, D, H, W] int64 of a list of data.Case."""
    images = torch.from_numpy(np.stack([to_unit(c.image, max_value) for c in cases]))
    labels = torch.from_numpy(np.stack([c.labels for c in cases]).astype(np.int64))[:, None]
    return images, labels


def train(cases: list, num_classes: int, max_value: int, options: TrainOptions, seed: int, device: torch.device,
          progress: Callable[[int], None] | None = None) -> torch.nn.Module:
    """Train a segmenter on `cases` (data.Case, one grid) for options.iters steps; returns it in eval mode.

    Args:
        cases: The training cases.
        num_classes: Classes with background.
        max_value: The stored dtype's largest value (to map images to [-1, 1]).
        options: Network and optimisation.
        seed: Seeds the weights, the minibatches and the augmentation.
        device: Where to train.
        progress: Called with the number of steps done since the last call.
    """
    from monai.losses import DiceCELoss
    images, labels = to_tensors(cases, max_value)  # [N, C, D, H, W], [N, 1, D, H, W]
    shape_dhw = tuple(images.shape[2:])
    with deterministic(), untracked_meta(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(options, images.shape[1], num_classes, shape_dhw).to(device).train()
        sampler = torch.Generator().manual_seed(seed)
        augment = augmentation(shape_dhw, seed) if options.augment == 'affine' else None
        optimizer = torch.optim.Adam(model.parameters(), lr=options.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=options.iters)
        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        for _ in range(options.iters):
            picks = torch.randint(len(cases), (options.batch,), generator=sampler)
            x, y = images[picks], labels[picks]
            if augment is not None:
                pairs = [augment({'image': xi, 'label': yi}) for xi, yi in zip(x, y)]
                x = torch.stack([p['image'] for p in pairs])
                y = torch.stack([p['label'] for p in pairs]).round().long()
            loss = loss_fn(model(x.to(device)), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if progress is not None:
                progress(1)
    return model.eval()

#----------------------------------------------------------------------------
# Inference and scores.


@torch.no_grad()
def predict(model: torch.nn.Module, cases: list, max_value: int, device: torch.device) -> np.ndarray:
    """Class indices [N, D, H, W] uint8 of the cases' images, one volume at a time on the whole grid."""
    predictions = []
    for case in cases:
        image = torch.from_numpy(to_unit(case.image, max_value))[None].to(device)  # [1, C, D, H, W]
        predictions.append(model(image).argmax(dim=1)[0].to(torch.uint8).cpu().numpy())
    return np.stack(predictions)


def score(predicted: np.ndarray, truth: np.ndarray, num_classes: int,
          spacing_dhw: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Dice and HD95 (mm) [N, num_classes - 1] of each foreground class in each case, by MONAI's DiceMetric and
    HausdorffDistanceMetric(percentile=95) on one-hot maps.

    NaN marks what is undefined: the Dice of a class the case's label map lacks; the HD95 of a class that the label
    map or the prediction lacks (MONAI returns NaN or infinity there; a missed class scores Dice 0).
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric
    from monai.networks.utils import one_hot
    p = one_hot(torch.from_numpy(predicted.astype(np.int64))[:, None], num_classes)  # [N, K, D, H, W]
    t = one_hot(torch.from_numpy(truth.astype(np.int64))[:, None], num_classes)
    dice = DiceMetric(include_background=False, reduction='none', ignore_empty=True)(p, t).double().numpy()
    with warnings.catch_warnings():  # MONAI warns for every empty class; the NaN says it.
        warnings.simplefilter('ignore')
        hd = HausdorffDistanceMetric(include_background=False, percentile=95, reduction='none')(
            p, t, spacing=list(spacing_dhw)).double().numpy()
    hd[~np.isfinite(hd)] = np.nan
    present_t, present_p = t[:, 1:].flatten(2).any(-1).numpy(), p[:, 1:].flatten(2).any(-1).numpy()
    hd[~(present_t & present_p)] = np.nan
    dice[~present_t] = np.nan
    return dice, hd

#----------------------------------------------------------------------------
# The backend the experiment runs.


class MonaiBackend:
    """Trains segmenters with train() and applies them with predict() (experiment.Backend)."""

    def __init__(self, options: TrainOptions, num_classes: int, max_value: int, device: torch.device) -> None:
        self.options, self.num_classes, self.max_value, self.device = options, num_classes, max_value, device

    def steps(self) -> int:
        return self.options.iters

    def fit(self, run, cases: list, progress: Callable[[int], None]) -> torch.nn.Module:
        return train(cases, self.num_classes, self.max_value, self.options, run.seed, self.device, progress)

    def predict(self, model: torch.nn.Module, cases: list, tag: str) -> np.ndarray:
        return predict(model, cases, self.max_value, self.device)

