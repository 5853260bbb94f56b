# SPDX-License-Identifier: Apache-2.0
"""The audit itself: nearest training neighbours of the holdout (the null) and of the generated volumes, in the
voxel space and any feature space, the calibrated flags, and the discriminator's membership inference."""

from __future__ import annotations

import dataclasses
import heapq
import sys
from typing import Iterable, Iterator

import numpy as np
import torch
import tqdm

from . import calibration, membership
from .features import FeatureSpace
from .inputs import PackedSet, as_tensor
from .search import Neighbours, VoxelIndex, nearest_by_cosine


@dataclasses.dataclass
class AuditOptions:
    """alpha: the flag's false-positive rate on novel volumes. threshold: a fixed similarity threshold instead of
    the calibrated one. shift, mirror, prefilter: the voxel search (search.VoxelIndex). batch: volumes per search.
    pairs: how many of the closest pairs to keep for the picture. seed: of the bootstrap and the control split."""
    alpha: float = 0.05
    threshold: float | None = None
    shift: int = 1
    mirror: bool = False
    prefilter: int = 0
    batch: int = 8
    pairs: int = 8
    seed: int = 0
    device: torch.device = torch.device('cpu')
    progress: bool | None = None  # None: progress bars on a terminal only.


@dataclasses.dataclass
class SpaceResult:
    """One similarity space: the generated volumes' neighbours, the null's, the threshold and the flags."""
    name: str
    description: str
    generated: Neighbours
    null: Neighbours | None
    threshold: float | None
    threshold_source: str | None  # 'holdout' (calibrated), 'given' (--threshold) or None (no flags).
    p_values: np.ndarray | None
    flagged: np.ndarray | None


@dataclasses.dataclass
class AuditResult:
    names: list[str]
    voxel: SpaceResult
    features: list[SpaceResult]
    membership: dict | None
    kept: dict[str, np.ndarray]  # Generated volumes of the closest pairs, by name.

    @property
    def spaces(self) -> list[SpaceResult]:
        return [self.voxel, *self.features]


def voxel_description(options: AuditOptions) -> str:
    shift = f'shifts of up to {options.shift} voxel{"s" if options.shift != 1 else ""} per axis' if options.shift \
        else 'no shift'
    mirror = ' and the x-mirror' if options.mirror else ''
    return (f'voxel space: Pearson correlation of the stored intensities (all image channels) on the packed grid, the '
            f'best over {shift}{mirror}')


def _bar(total: int | None, desc: str, options: AuditOptions) -> tqdm.tqdm:
    disable = None if options.progress is None else not options.progress
    return tqdm.tqdm(total=total, desc=desc, unit='vol', disable=disable, file=sys.stderr, dynamic_ncols=True)


def _batches(volumes: np.ndarray, batch: int) -> Iterator[np.ndarray]:
    for start in range(0, len(volumes), batch):
        yield volumes[start:start + batch]


def _features(space: FeatureSpace, volumes: np.ndarray, options: AuditOptions, mirrored: bool = False) -> torch.Tensor:
    rows = [space(as_tensor(v, options.device).flip(-1) if mirrored else as_tensor(v, options.device))
            for v in _batches(volumes, options.batch)]
    return torch.cat(rows)


def _space(name: str, description: str, generated: Neighbours, null: Neighbours | None, alpha: float,
           given: float | None) -> SpaceResult:
    """Threshold, p-values and flags of one space: calibrated on the null, or the given threshold, or none."""
    p_values = calibration.p_values(null.similarity, generated.similarity) if null is not None else None
    if given is not None:
        threshold, source = given, 'given'
    elif null is not None:
        threshold, source = calibration.threshold(null.similarity, alpha), 'holdout'
    else:
        threshold, source = None, None
    flagged = generated.similarity > threshold if threshold is not None else None
    return SpaceResult(name, description, generated, null, threshold, source, p_values, flagged)


def run_audit(train: PackedSet, holdout: PackedSet | None, generated: Iterable[tuple[list[str], np.ndarray]],
              total: int | None, options: AuditOptions, spaces: Iterable[FeatureSpace] = (),
              network: dict | None = None) -> AuditResult:
    """Audit the generated volumes ((names, stored [B, C, D, H, W]) batches, `total` of them if known).

    Args:
        train, holdout: The training set and the holdout (None: no calibration; options.threshold is used).
        network: The loaded network file (legacy.load_network); its D, when there is one, runs the membership
            inference (with a holdout).

    Raises:
        ValueError: too few holdout cases for options.alpha (one line).
    """
    spaces = list(spaces)
    device = options.device
    index = VoxelIndex(as_tensor(train.volumes, device), options.shift, options.mirror, options.prefilter)
    train_features = {s.name: _features(s, train.volumes, options) for s in spaces}

    # The null first: the threshold must be known before the generated volumes stream past.
    null, feature_null = None, {}
    if holdout is not None:
        with _bar(len(holdout.volumes), 'Holdout  ', options) as bar:
            parts = []
            for v in _batches(holdout.volumes, options.batch):
                parts.append(index.search(as_tensor(v, device)))
                bar.update(len(v))
        null = Neighbours.concatenate(parts)
        for s in spaces:
            mirrored = _features(s, holdout.volumes, options, True) if options.mirror else None
            feature_null[s.name] = nearest_by_cosine(train_features[s.name], _features(s, holdout.volumes, options),
                                                     mirrored)
        if options.threshold is None:
            calibration.threshold(null.similarity, options.alpha)  # Too few holdout cases: say so before the work.

    names, parts, feature_parts, kept = [], [], {s.name: [] for s in spaces}, []
    with _bar(total, 'Generated', options) as bar:
        for batch_names, stored in generated:
            found = index.search(as_tensor(stored, device))
            parts.append(found)
            for s in spaces:
                mirrored = _features(s, stored, options, True) if options.mirror else None
                feature_parts[s.name].append(nearest_by_cosine(train_features[s.name], _features(s, stored, options),
                                                               mirrored))
            for name, volume, similarity in zip(batch_names, stored, found.similarity):
                item = (float(similarity), len(names), name, volume)
                names.append(name)
                (heapq.heappush if len(kept) < options.pairs else heapq.heappushpop)(kept, item)
            bar.update(len(stored))
    if not names:
        raise ValueError('no generated volumes to audit')

    voxel = _space('voxel', voxel_description(options), Neighbours.concatenate(parts), null, options.alpha,
                   options.threshold)
    feature_results = [_space(s.name, s.description, Neighbours.concatenate(feature_parts[s.name]),
                              feature_null.get(s.name), options.alpha, None) for s in spaces]
    member = None
    if network is not None and network.get('D') is not None and holdout is not None:
        member = run_membership(network, train, holdout, options)
    return AuditResult(names, voxel, feature_results, member, {name: volume for _, _, name, volume in kept})


def run_membership(network: dict, train: PackedSet, holdout: PackedSet, options: AuditOptions) -> dict:
    """D's scores of the training and holdout cases, the attack's AUC and the control's (membership.membership)."""
    D, info = network['D'], network['G_ema'].volume_info
    c_dim = int(getattr(D, 'c_dim', 0))
    scores = {}
    with _bar(len(train.volumes) + len(holdout.volumes), 'D scores ', options) as bar:
        for group in (train, holdout):
            scores[group.option] = membership.discriminator_scores(
                D, group.network_batches(info, c_dim, options.batch), options.device, progress=bar.update)
    return membership.membership(scores[train.option], scores[holdout.option], options.seed)
