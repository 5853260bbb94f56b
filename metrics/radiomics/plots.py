# SPDX-License-Identifier: Apache-2.0
"""The figures of radiomics.py: QQ plots of every feature in one grid, and the per-feature Wasserstein distances.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot state, no display needed) and returned;
the caller writes them.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .compare import qq_quantiles

FAKE_COLOUR, REFERENCE_COLOUR = '#d62728', '#1f77b4'


def short_name(name: str) -> str:
    """'original_glcm_Contrast' -> 'glcm_Contrast'."""
    return name.split('_', 1)[1] if name.startswith('original_') else name


def qq_grid(names: list[str], real: np.ndarray, fake: np.ndarray, reference: np.ndarray | None = None) -> Figure:
    """QQ plots, one panel per feature: quantiles of the fakes (and the reference set) against the real ones.

    Args:
        names: Feature names [F].
        real, fake, reference: Standardised features [N, F] (reference may be None).
    """
    cols = max(1, math.ceil(math.sqrt(len(names))))
    rows = max(1, math.ceil(len(names) / cols))
    width, height = 1.7 * cols, 1.7 * rows + 0.5
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: a layout engine measures every tick label of every panel, which takes seconds for ~100 panels.
    fig.subplots_adjust(left=0.25 / width * 1.7, right=1 - 0.1 / width, bottom=0.2 / height, top=1 - 0.5 / height,
                        wspace=0.35, hspace=0.45)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, k in zip(axes, range(len(names))):
        _qq_panel(ax, short_name(names[k]), real[:, k], fake[:, k], None if reference is None else reference[:, k])
    for ax in axes[len(names):]:
        ax.set_axis_off()
    labels = 'fake (red)' + ('' if reference is None else ', reference (blue)')
    fig.suptitle(f'QQ plots, standardised by the real set: {labels} against real quantiles', fontsize=10)
    return fig


def _qq_panel(ax, title: str, real: np.ndarray, fake: np.ndarray, reference: np.ndarray | None) -> None:
    real = real[np.isfinite(real)]
    lo, hi = math.inf, -math.inf
    for values, colour in ((fake, FAKE_COLOUR), (reference, REFERENCE_COLOUR)):
        if values is None or len(real) == 0:
            continue
        values = values[np.isfinite(values)]
        if len(values) == 0:
            continue
        q_other, q_real = qq_quantiles(values, real)
        ax.plot(q_real, q_other, '.', color=colour, markersize=2)
        lo, hi = min(lo, q_real.min(), q_other.min()), max(hi, q_real.max(), q_other.max())
    if lo < hi:
        ax.plot([lo, hi], [lo, hi], '-', color='0.5', linewidth=0.6)  # Same distribution: on this line.
    ax.set_title(title, fontsize=5, pad=2)
    ax.locator_params(nbins=3)
    ax.tick_params(labelsize=5, length=2, pad=1)


def wasserstein_bars(names: list[str], fake: np.ndarray, reference: np.ndarray | None = None) -> Figure:
    """Horizontal bars of the per-feature Wasserstein distances (standardised units) of fake-vs-real beside
    reference-vs-real, largest fake distance on top."""
    fake = np.asarray(fake, dtype=np.float64)
    order = np.argsort(np.where(np.isfinite(fake), fake, -np.inf))  # Ascending: barh draws bottom-up.
    height = 0.17 if reference is not None else 0.34
    fig = Figure(figsize=(7.5, 1.2 + 0.22 * len(names)), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y + (height / 2 if reference is not None else 0), np.nan_to_num(fake[order]), height=height,
            color=FAKE_COLOUR, label='fake vs real')
    if reference is not None:
        ax.barh(y - height / 2, np.nan_to_num(np.asarray(reference, dtype=np.float64)[order]), height=height,
                color=REFERENCE_COLOUR, label='reference vs real (baseline)')
    ax.set_yticks(y, [short_name(names[k]) for k in order], fontsize=6)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel('Wasserstein distance (units of the real standard deviation)', fontsize=8)
    ax.tick_params(axis='x', labelsize=7)
    ax.legend(fontsize=7, loc='lower right')
    ax.set_title('Per-feature Wasserstein distance to the real set', fontsize=10)
    return fig
