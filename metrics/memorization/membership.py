# SPDX-License-Identifier: Apache-2.0
"""Membership inference from the discriminator (LOGAN, Hayes et al., PoPETs 2019): does D score the cases it was
trained on higher than real cases it never saw?

The attack's AUC is P(D(member) > D(non-member)), the Mann-Whitney U statistic over n_members * n_holdout (ties
count one half), by scipy.stats.mannwhitneyu; its 95% interval is a percentile bootstrap (scipy.stats.bootstrap,
each group resampled on its own). An AUC alone is not a leak: the training and holdout cases may differ for other
reasons (scanner, site, time), which D also sees. The control is the AUC between two random halves of the training
set, members both: the attack's AUC above the control's interval is the evidence.

D sees every case alone: its minibatch-standard-deviation layers get groups of one, so a case's score does not
depend on which cases share its batch. No augmentation is applied.
"""

from __future__ import annotations

import copy
from typing import Callable, Iterable

import numpy as np
import scipy.stats
import torch

N_RESAMPLES = 2000


def auc(members: np.ndarray, others: np.ndarray, axis: int = -1) -> np.ndarray | float:
    """P(score of a member > score of another), ties counting 1/2, along `axis`."""
    members, others = np.asarray(members, dtype=np.float64), np.asarray(others, dtype=np.float64)
    u = scipy.stats.mannwhitneyu(members, others, axis=axis).statistic
    value = np.asarray(u) / (members.shape[axis] * others.shape[axis])
    return float(value) if value.ndim == 0 else value


def auc_ci(members: np.ndarray, others: np.ndarray, seed: int = 0, level: float = 0.95,
           n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """The percentile-bootstrap interval of the AUC; (nan, nan) when a group has fewer than 2 scores."""
    if len(members) < 2 or len(others) < 2:
        return (float('nan'), float('nan'))
    result = scipy.stats.bootstrap((np.asarray(members, np.float64), np.asarray(others, np.float64)), auc,
                                   n_resamples=n_resamples, confidence_level=level, method='percentile',
                                   vectorized=True, rng=np.random.default_rng(seed))
    return (float(result.confidence_interval.low), float(result.confidence_interval.high))


def membership(train_scores: np.ndarray, holdout_scores: np.ndarray, seed: int = 0) -> dict:
    """The attack's AUC (training vs holdout) and the control's (two random halves of the training set), each with
    its bootstrap interval."""
    train_scores = np.asarray(train_scores, dtype=np.float64)
    order = np.random.default_rng(seed).permutation(len(train_scores))
    half = len(order) // 2
    first, second = train_scores[order[:half]], train_scores[order[half:]]
    return dict(auc=auc(train_scores, holdout_scores), auc_ci95=list(auc_ci(train_scores, holdout_scores, seed)),
                control_auc=auc(first, second) if half >= 1 else float('nan'),
                control_auc_ci95=list(auc_ci(first, second, seed + 1)),
                members=int(len(train_scores)), non_members=int(len(holdout_scores)),
                mean_score_members=float(train_scores.mean()), mean_score_non_members=float(np.mean(holdout_scores)))


def per_case_discriminator(D: torch.nn.Module) -> torch.nn.Module:
    """A copy of D whose minibatch-standard-deviation layers use groups of one volume."""
    D = copy.deepcopy(D).eval().requires_grad_(False)
    for module in D.modules():
        if hasattr(module, 'group_size') and type(module).__name__ == 'MinibatchStdLayer':
            module.group_size = 1
    return D


@torch.no_grad()
def discriminator_scores(D: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                         device: torch.device, progress: Callable[[int], None] | None = None) -> np.ndarray:
    """D's logits [N] for (volumes [B, K, D, H, W] in the networks' [-1, 1] form, labels [B, c_dim]) batches."""
    D = per_case_discriminator(D).to(device)
    scores = []
    for volumes, labels in batches:
        logits = D(volumes.to(device), labels.to(device), force_fp32=True)
        scores.append(logits.float().flatten().cpu().numpy())
        if progress is not None:
            progress(len(volumes))
    return np.concatenate(scores).astype(np.float64)
