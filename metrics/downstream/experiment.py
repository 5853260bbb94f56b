# SPDX-License-Identifier: Apache-2.0
"""The runs of the downstream experiment and their execution.

A run trains one segmenter and tests it on the fixed real test cases. The regimes:

- real:      a share `fraction` of the real training cases;
- synthetic: every synthetic volume (the real fraction is 0);
- mixed:     the same real cases as `real` at that fraction, plus round(ratio x their number) synthetic volumes.

Each is repeated for every seed: the seed draws the real subset (nested: the cases of a smaller fraction are among
those of a larger one), the synthetic subset of `mixed`, the initial weights, the minibatches and the augmentation.
Label consistency: the `real` segmenters at the largest fraction also segment every synthetic volume, scored against
its own generated label map.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

from metrics.downstream.data import LabelledSet

REGIMES = ('real', 'synthetic', 'mixed')


@dataclasses.dataclass(frozen=True)
class Run:
    """One segmenter to train and test."""
    regime: str
    fraction: float              # Share of the real training cases; 0 for `synthetic`.
    seed: int
    real: tuple[int, ...]        # Indices into the real training cases.
    synthetic: tuple[int, ...]   # Indices into the synthetic volumes.
    swept: bool                  # Fractions other than 1 were asked for: the name carries the fraction.

    @property
    def name(self) -> str:
        """The regime as summary.json names it: 'real', or 'mixed@0.25' when fractions are swept."""
        return f'{self.regime}@{self.fraction:g}' if self.swept and self.regime != 'synthetic' else self.regime


def real_count(fraction: float, total: int) -> int:
    """Real training cases at `fraction` of `total` (at least one)."""
    return max(1, int(round(fraction * total)))


def plan(regimes: list[str], fractions: list[float], seeds: list[int], n_real: int, n_synthetic: int,
         ratio: float) -> list[Run]:
    """Every run, ordered by regime, then fraction, then seed. ValueError when `mixed` needs more synthetic volumes
    than there are."""
    unknown = [r for r in regimes if r not in REGIMES]
    if unknown:
        raise ValueError(f'--regimes: "{unknown[0]}" is not one of {", ".join(REGIMES)}')
    swept = sorted(set(fractions)) != [1.0]
    runs = []
    for regime in REGIMES:
        if regime not in regimes:
            continue
        for fraction in ([0.0] if regime == 'synthetic' else sorted(set(fractions))):
            for seed in seeds:
                runs.append(_run(regime, fraction, seed, n_real, n_synthetic, ratio, swept))
    return runs


def _run(regime: str, fraction: float, seed: int, n_real: int, n_synthetic: int, ratio: float, swept: bool) -> Run:
    real_order = np.random.default_rng([seed, 1]).permutation(n_real)
    synthetic_order = np.random.default_rng([seed, 2]).permutation(n_synthetic)
    real = tuple(sorted(int(i) for i in real_order[:real_count(fraction, n_real)])) if regime != 'synthetic' else ()
    synthetic: tuple[int, ...] = ()
    if regime == 'synthetic':
        synthetic = tuple(range(n_synthetic))
    elif regime == 'mixed':
        wanted = int(round(ratio * len(real)))
        if wanted > n_synthetic:
            raise ValueError(f'--synthetic-ratio {ratio:g} asks for {wanted} synthetic volumes beside the {len(real)} '
                             f'real ones of mixed at fraction {fraction:g}; --synthetic holds {n_synthetic}')
        synthetic = tuple(sorted(int(i) for i in synthetic_order[:wanted]))
    return Run(regime, fraction, seed, real, synthetic, swept)


def synthetic_needed(regimes: list[str], fractions: list[float], n_real: int, ratio: float) -> int:
    """How many synthetic volumes the regimes need at least: what `mixed` takes at the largest fraction, and as many
    as there are real training cases for `synthetic`."""
    needed = n_real if 'synthetic' in regimes else 0
    if 'mixed' in regimes:
        needed = max(needed, int(round(ratio * real_count(max(fractions), n_real))))
    return max(needed, 1)

#----------------------------------------------------------------------------
# Execution.


class Backend(Protocol):
    """What trains and applies a segmenter: MONAI (segmenter.py) or nnU-Net (nnunet.py)."""

    def steps(self) -> int: ...  # Progress units of one run's training.

    def fit(self, run: Run, cases: list, progress: Callable[[int], None]): ...

    def predict(self, model, cases: list, tag: str) -> np.ndarray: ...  # Class indices [N, D, H, W].


@dataclasses.dataclass
class Scores:
    """Dice and HD95 per case and foreground label of one run on one set of cases."""
    run: Run
    source: str            # 'test' (the real test cases) or 'generated' (label consistency).
    cases: list[str]
    dice: np.ndarray       # [N, K] with NaN where undefined.
    hd95: np.ndarray       # [N, K] in mm, NaN where undefined.


def consistency_fraction(runs: list[Run]) -> float | None:
    """The fraction of the `real` runs whose segmenters check label consistency (the largest), or None."""
    fractions = [r.fraction for r in runs if r.regime == 'real']
    return max(fractions) if fractions else None


def execute(backend: Backend, runs: list[Run], train: LabelledSet, test: LabelledSet,
            synthetic: LabelledSet | None, score: Callable, progress: Callable[[str, int], None]) -> list[Scores]:
    """Train and test every run; the `real` runs at the largest fraction also segment the synthetic volumes.

    Args:
        backend: Trains and applies the segmenters.
        runs: From plan().
        train, test, synthetic: The real training cases, the real test cases, the synthetic volumes (or None).
        score: segmenter.score-like: (predicted, truth) -> (dice, hd95).
        progress: Called with the run's name and the steps done.
    """
    results = []
    check_consistency = consistency_fraction(runs)
    truth = np.stack([c.labels for c in test.cases])  # [N, D, H, W]
    for run in runs:
        cases = [train.cases[i] for i in run.real] + ([synthetic.cases[i] for i in run.synthetic] if synthetic else [])
        model = backend.fit(run, cases, lambda n, name=run.name: progress(name, n))
        dice, hd = score(backend.predict(model, test.cases, 'test'), truth)
        results.append(Scores(run, 'test', [c.name for c in test.cases], dice, hd))
        if synthetic is not None and run.regime == 'real' and run.fraction == check_consistency:
            generated = np.stack([c.labels for c in synthetic.cases])
            dice, hd = score(backend.predict(model, synthetic.cases, 'generated'), generated)
            results.append(Scores(run, 'generated', [c.name for c in synthetic.cases], dice, hd))
    return results
