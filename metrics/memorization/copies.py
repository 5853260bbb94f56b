# SPDX-License-Identifier: Apache-2.0
"""generate.py --exclude-copies: drop the volumes the audit would flag, and make replacements from the next seeds.

The filter is the audit's voxel test (audit.py with its defaults: shifts of up to 1 voxel, the x-mirror when the
network was trained with it, alpha 0.05), calibrated on the holdout once, then applied to each volume as
generate.py makes it.
"""

from __future__ import annotations

from typing import Callable, Iterator

import click
import numpy as np
import torch

from dnnlib.cli import MAX_SEED
from volumes.contract import from_network, from_unit

from . import calibration, inputs
from .search import VoxelIndex

MAX_EXTRA_FACTOR = 10  # Replacements stop after trying this many times as many seeds as were asked for.


class CopyFilter:
    """Calls keep(volume) for network volumes [K, D, H, W]: False for a likely copy of a training case.

    Args:
        data, holdout: The training set and the holdout (packed the same way).
        network: legacy.load_network's dict (G_ema's record; training_set_kwargs.xflip decides the mirror).
        device: Where the search runs.

    Raises:
        click.BadParameter: a bad dataset, a holdout packed differently or too small, a network that does not fit.
    """

    def __init__(self, data: str, holdout: str, network: dict, device: torch.device, alpha: float = 0.05,
                 shift: int = 1) -> None:
        G = network['G_ema']
        try:
            train = inputs.read_packed(data, '--data')
            held = inputs.read_packed(holdout, '--holdout')
            inputs.check_holdout(train, held)
            inputs.check_network(G, train)
        except inputs.InputError as e:
            raise click.BadParameter(e.message, param_hint=e.option) from None
        if len(held.names) < calibration.min_holdout(alpha):
            raise click.BadParameter(f'{len(held.names)} cases cannot calibrate alpha={alpha:g}: it needs at least '
                                     f'{calibration.min_holdout(alpha)}', param_hint='--holdout')
        kwargs = network.get('training_set_kwargs')
        mirror = bool(kwargs.get('xflip', False)) if isinstance(kwargs, dict) else True
        self.index = VoxelIndex(inputs.as_tensor(train.volumes, device), shift, mirror)
        self.info, self.device = G.volume_info, device
        null = np.concatenate([self.index.search(inputs.as_tensor(held.volumes[i:i + 8], device)).similarity
                               for i in range(0, len(held.volumes), 8)])
        self.threshold, self.alpha = calibration.threshold(null, alpha), alpha
        self.dropped, self.unreplaced, self.replacement_seeds = 0, 0, []

    def __call__(self, volume: np.ndarray) -> bool:
        image, _ = from_network(volume, self.info)
        stored = from_unit(image, self.info.dtype)[None]  # [1, C, D, H, W] as generate.py writes it
        keep = bool(self.index.search(inputs.as_tensor(stored, self.device)).similarity[0] <= self.threshold)
        self.dropped += not keep
        return keep

    def stream(self, generate: Callable[[list[int]], Iterator[tuple[int, np.ndarray]]], seeds: list[int],
               batch: int) -> Iterator[tuple[int, np.ndarray]]:
        """(seed, volume) of `seeds` that are no copies; after them one volume from the next seeds (beyond the
        largest asked for) for every copy dropped, trying at most MAX_EXTRA_FACTOR times as many seeds as asked."""
        missing = 0
        for seed, volume in generate(seeds):
            if self(volume):
                yield seed, volume
            else:
                missing += 1
        next_seed, limit = max(seeds) + 1, MAX_EXTRA_FACTOR * len(seeds)
        while missing and len(self.replacement_seeds) < limit and next_seed <= MAX_SEED:
            chunk = list(range(next_seed, min(next_seed + min(batch, missing), MAX_SEED + 1)))
            next_seed += len(chunk)
            for seed, volume in generate(chunk):
                self.replacement_seeds.append(seed)
                if self(volume):
                    missing -= 1
                    yield seed, volume
        self.unreplaced = missing

    def note(self) -> str:
        """What generate.py reports: how many copies were dropped and how they were replaced."""
        note = (f'--exclude-copies dropped {self.dropped} likely cop{"y" if self.dropped == 1 else "ies"} (voxel '
                f'correlation to a training case > {self.threshold:.4f}, calibrated on the holdout at alpha '
                f'{self.alpha:g})')
        if self.replacement_seeds:
            note += f' and tried seeds {self.replacement_seeds[0]}-{self.replacement_seeds[-1]} for replacements'
        if self.unreplaced:
            note += f'; {self.unreplaced} could not be replaced: the model copies often, audit it with audit.py'
        return note
