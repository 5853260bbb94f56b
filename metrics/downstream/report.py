# SPDX-License-Identifier: Apache-2.0
"""What downstream.py writes: results.csv, label_consistency.csv, summary.json, dice.png and the terminal table.

The numbers:

- A case's Dice is the mean over the foreground labels its label map holds (a label the case lacks has no Dice and
  is left out); a regime's Dice is the mean over every (seed, test case) pair.
- The interval is a 95 % percentile bootstrap (scipy.stats.bootstrap, 10000 resamples, fixed random generator) of
  that mean over the test cases, each case's value averaged over the seeds first: it says how much the number
  depends on which real cases happened to be tested. The spread between seeds is given apart (`dice_per_seed`).
- HD95 (mm) is undefined when the prediction or the label map lacks a label (MONAI returns NaN or infinity): such
  scores are null in the CSV, left out of the means, and counted (`hd95_missing`: the label was in the case but the
  segmenter predicted none of it; its Dice of 0 is in the Dice mean).
"""

from __future__ import annotations

import csv
import io
import math
import warnings

import numpy as np

from metrics.downstream.experiment import Scores

ROW_FIELDS = ('regime', 'real_fraction', 'seed', 'case', 'label', 'dice', 'hd95')
CONSISTENCY_FIELDS = ('source', 'segmenter', 'seed', 'case', 'label', 'dice', 'hd95')
BOOTSTRAP_RESAMPLES = 10000

#----------------------------------------------------------------------------
# Tables.


def score_rows(scores: list[Scores], class_names: list[str]) -> list[dict]:
    """One row per run, case and foreground label; NaN where a score is undefined."""
    rows = []
    for s in scores:
        for n, case in enumerate(s.cases):
            for k, label in enumerate(class_names):
                rows.append(dict(regime=s.run.regime, real_fraction=s.run.fraction, seed=s.run.seed, case=case,
                                 label=label, dice=float(s.dice[n, k]), hd95=float(s.hd95[n, k]),
                                 source=s.source, segmenter=s.run.name))
    return rows


def csv_bytes(rows: list[dict], fields: tuple[str, ...]) -> bytes:
    """CSV of `fields`; undefined (NaN) scores as empty cells, numbers at full precision."""
    def cell(value):
        if isinstance(value, float):
            return '' if not math.isfinite(value) else repr(value)
        return value
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(fields)
    for row in rows:
        writer.writerow([cell(row[f]) for f in fields])
    return buffer.getvalue().encode()

#----------------------------------------------------------------------------
# Statistics.


def _nanmean(values: np.ndarray, axis=None) -> np.ndarray | float:
    with warnings.catch_warnings():  # All-NaN slices are expected (labels absent from a case): they stay NaN.
        warnings.simplefilter('ignore', RuntimeWarning)
        return np.nanmean(values, axis=axis)


def interval(values: np.ndarray) -> list[float] | None:
    """95 % percentile bootstrap interval of the mean of `values` (NaN left out); None with fewer than 2 values."""
    import scipy.stats
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) < 2:
        return None
    if np.ptp(values) == 0:
        return [float(values[0])] * 2
    result = scipy.stats.bootstrap((values,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=0.95,
                                   method='percentile', rng=np.random.default_rng(0))
    return [float(result.confidence_interval.low), float(result.confidence_interval.high)]


def _finite(value) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None


def _pooled(values: np.ndarray) -> dict:
    """values [S, N] (seed, case): the mean over all pairs, its interval over cases, the per-seed means."""
    return dict(mean=_finite(_nanmean(values)), ci95=interval(_nanmean(values, axis=0)),
                per_seed=[_finite(v) for v in _nanmean(values, axis=1)])


def summarise(scores: list[Scores], class_names: list[str]) -> dict:
    """The numbers of one regime (or one side of label consistency) over its seeds, which share their cases."""
    dice = np.stack([s.dice for s in scores])   # [S, N, K]
    hd = np.stack([s.hd95 for s in scores])     # [S, N, K]
    case_dice, case_hd = _nanmean(dice, axis=2), _nanmean(hd, axis=2)  # [S, N]
    d, h = _pooled(case_dice), _pooled(case_hd)
    missing = np.isfinite(dice) & ~np.isfinite(hd)
    per_label = {}
    for k, name in enumerate(class_names):
        dk, hk = _pooled(dice[:, :, k]), _pooled(hd[:, :, k])
        per_label[name] = dict(dice=dk['mean'], dice_ci95=dk['ci95'], hd95=hk['mean'], hd95_ci95=hk['ci95'],
                               hd95_missing=int(missing[:, :, k].sum()),
                               cases_without_label=int((~np.isfinite(dice[0, :, k])).sum()))
    run = scores[0].run
    return dict(dice=d['mean'], dice_ci95=d['ci95'], dice_per_seed=d['per_seed'], hd95=h['mean'],
                hd95_ci95=h['ci95'], hd95_missing=int(missing.sum()), per_label=per_label,
                real_fraction=run.fraction, train_real=len(run.real), train_synthetic=len(run.synthetic),
                seeds=[s.run.seed for s in scores], cases=len(scores[0].cases))


def summary(scores: list[Scores], class_names: list[str], protocol: dict) -> dict:
    """summary.json: every regime (by name, in run order), label consistency, the protocol."""
    names = list(dict.fromkeys(s.run.name for s in scores if s.source == 'test'))
    regimes = {name: summarise([s for s in scores if s.source == 'test' and s.run.name == name], class_names)
               for name in names}
    generated = [s for s in scores if s.source == 'generated']
    consistency = None
    if generated:
        segmenter = generated[0].run.name
        real = [s for s in scores if s.source == 'test' and s.run.name == segmenter]
        consistency = dict(segmenter=segmenter, generated=summarise(generated, class_names),
                           real=summarise(real, class_names))
    return dict(regimes=regimes, label_consistency=consistency, protocol=protocol)



#----------------------------------------------------------------------------
# The figure and the terminal table.


def _errorbar(ax, x, entry: dict, **kwargs) -> None:
    mean, ci = entry['dice'], entry['dice_ci95']
    if mean is None:
        return
    err = [[mean - ci[0]], [ci[1] - mean]] if ci else None
    ax.errorbar([x], [mean], yerr=err, fmt='o', capsize=4, **kwargs)


def dice_figure(result: dict) -> bytes:
    """dice.png: the Dice of every regime with its interval; beside it, when fractions were swept, Dice against the
    real fraction for `real` and `mixed`, with `synthetic` as a band."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    regimes = result['regimes']
    swept = any('@' in name for name in regimes)
    fig, axes = plt.subplots(1, 2 if swept else 1, figsize=(11 if swept else 6, 4.2), squeeze=False)
    ax = axes[0, 0]
    for i, (name, entry) in enumerate(regimes.items()):
        _errorbar(ax, i, entry, color=f'C{("real", "synthetic", "mixed").index(name.split("@")[0])}')
    consistency = result.get('label_consistency')
    if consistency:  # The generated volumes' Dice over the same segmenter's band on the real test cases.
        x, real = len(regimes), consistency['real']
        if real['dice'] is not None:
            lo, hi = real['dice_ci95'] or (real['dice'], real['dice'])
            ax.fill_between([x - 0.3, x + 0.3], lo, hi, color='0.8', label=f'{consistency["segmenter"]} on real')
            ax.legend(loc='best')
        _errorbar(ax, x, consistency['generated'], color='C3')
    labels = list(regimes) + (['label consistency\n(generated)'] if consistency else [])
    ax.set_xticks(range(len(labels)), labels, rotation=30 if len(labels) > 4 else 0, ha='right' if
                  len(labels) > 4 else 'center')
    ax.set_ylabel('Dice (mean, 95 % CI)')
    ax.set_title('real test cases; label consistency on generated', fontsize=9)
    ax.grid(axis='y', alpha=0.3)
    if swept:
        _fraction_curve(axes[0, 1], regimes)
    for axis in axes[0]:  # Zoomed to the values (in steps of 0.05), so that close regimes stay apart.
        axis.set_ylim(*_dice_range(result))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png', dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _dice_range(result: dict) -> tuple[float, float]:
    entries = list(result['regimes'].values())
    if result.get('label_consistency'):
        entries += [result['label_consistency']['generated'], result['label_consistency']['real']]
    values = [v for e in entries if e['dice'] is not None for v in [e['dice'], *(e['dice_ci95'] or [])]]
    if not values:
        return 0.0, 1.0
    return max(0.0, math.floor((min(values) - 0.02) * 20) / 20), min(1.0, math.ceil((max(values) + 0.02) * 20) / 20)


def _fraction_curve(ax, regimes: dict) -> None:
    for color, regime in (('C0', 'real'), ('C2', 'mixed')):
        points = sorted((e['real_fraction'], e) for n, e in regimes.items() if n.split('@')[0] == regime and
                        e['dice'] is not None)
        if not points:
            continue
        x = [p[0] for p in points]
        ax.plot(x, [p[1]['dice'] for p in points], 'o-', color=color, label=regime)
        lo = [p[1]['dice_ci95'][0] if p[1]['dice_ci95'] else p[1]['dice'] for p in points]
        hi = [p[1]['dice_ci95'][1] if p[1]['dice_ci95'] else p[1]['dice'] for p in points]
        ax.fill_between(x, lo, hi, color=color, alpha=0.2)
    synthetic = regimes.get('synthetic')
    if synthetic and synthetic['dice'] is not None:
        ax.axhline(synthetic['dice'], color='C1', label='synthetic only')
        if synthetic['dice_ci95']:
            ax.axhspan(*synthetic['dice_ci95'], color='C1', alpha=0.15)
    ax.set_xlabel('share of the real training cases')
    ax.set_ylabel('Dice')
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right')


def _fmt(value, digits: int = 3) -> str:
    return '-' if value is None else f'{value:.{digits}f}'


def _ci(ci) -> str:
    return '' if not ci else f'[{ci[0]:.3f}, {ci[1]:.3f}]'


def table(result: dict) -> str:
    """A short table for the terminal: Dice with its interval, HD95, training cases per regime."""
    lines = [f'{"regime":<16} {"Dice":>6} {"95% CI":<17} {"HD95 mm":>8} {"train real+synth":>17}']
    for name, e in result['regimes'].items():
        lines.append(f'{name:<16} {_fmt(e["dice"]):>6} {_ci(e["dice_ci95"]):<17} {_fmt(e["hd95"], 2):>8} '
                     f'{e["train_real"]:>8}+{e["train_synthetic"]:<8}')
    c = result.get('label_consistency')
    if c:
        lines.append(f'label consistency ({c["segmenter"]} segmenter): Dice {_fmt(c["generated"]["dice"])} '
                     f'{_ci(c["generated"]["dice_ci95"])} on {c["generated"]["cases"]} generated volumes, '
                     f'{_fmt(c["real"]["dice"])} {_ci(c["real"]["dice_ci95"])} on the real test cases')
    return '\n'.join(lines)
