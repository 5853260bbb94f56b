# SPDX-License-Identifier: Apache-2.0
"""The audit's pictures: the closest generated/training pairs (three upright planes each, the similarity under
every pair) and the histograms of the null and generated similarities with the threshold.

Figures use matplotlib's object API on the Agg canvas (no pyplot state, no display) and come back as PNG bytes.
"""

from __future__ import annotations

import io
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from training.visualize import middle_slices
from volumes.contract import VolumeInfo

from .core import SpaceResult

NULL_COLOUR, GENERATED_COLOUR, THRESHOLD_COLOUR = '#1f77b4', '#d62728', '#2ca02c'


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format='png')
    return buffer.getvalue()


def planes(volume: np.ndarray, info: VolumeInfo) -> np.ndarray:
    """The middle axial, coronal and sagittal slices of a stored volume's first channel, upright, side by side, with
    square pixels: [h, w] in [0, 1]."""
    image = middle_slices(volume[:1].astype(np.float32), ('axial', 'coronal', 'sagittal'), info.spacing)[0]
    return np.clip(image / info.max_value, 0, 1)


def nearest_pairs(pairs: list[dict], info: VolumeInfo, space: str) -> Figure:
    """One row per pair: the generated volume beside its nearest training case.

    Args:
        pairs: Dicts with generated (name, volume [C, D, H, W] stored), nearest (name, volume), similarity,
            p_value (or None), flagged (bool or None), mirrored (bool), shift (x, y, z).
        info: The training data's record (spacing, stored range).
        space: What the similarity is, for the title.
    """
    rows = max(len(pairs), 1)
    height = 1.9 * rows + 1.0
    fig = Figure(figsize=(7.5, height), dpi=100)
    FigureCanvasAgg(fig)
    fig.suptitle(f'Closest generated volumes and their nearest training cases (axial, coronal, sagittal; first '
                 f'channel)\n{textwrap.fill(space, 120)}', fontsize=8)
    for r, pair in enumerate(pairs):
        for c, (role, name, volume) in enumerate((('generated', pair['generated'], pair['generated_volume']),
                                                  ('training', pair['nearest'], pair['nearest_volume']))):
            ax = fig.add_subplot(rows, 2, 2 * r + c + 1)
            ax.imshow(planes(volume, info), cmap='gray', vmin=0, vmax=1, interpolation='nearest')
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f'{role}: {name}', fontsize=7)
            if c == 0:
                ax.set_xlabel(_caption(pair), fontsize=7, color='#b00000' if pair['flagged'] else 'black')
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.3 / height, top=1 - 0.85 / height, hspace=0.6, wspace=0.05)
    return fig


def _caption(pair: dict) -> str:
    text = f'similarity {pair["similarity"]:.4f}'
    if pair['p_value'] is not None:
        text += f', p = {pair["p_value"]:.3g}'
    if pair['flagged'] is not None:
        text += ', FLAGGED' if pair['flagged'] else ', not flagged'
    moves = []
    if pair['mirrored']:
        moves.append('x-mirrored')
    if any(pair['shift']):
        moves.append('shifted ' + ','.join(str(int(s)) for s in pair['shift']) + ' (x,y,z)')
    return text + (f' [{"; ".join(moves)}]' if moves else '')


def similarity_histograms(spaces: list[SpaceResult]) -> Figure:
    """One panel per space: the null (holdout) and generated nearest-training similarities, and the threshold."""
    fig = Figure(figsize=(6.5, 3.2 * len(spaces)), dpi=100)
    FigureCanvasAgg(fig)
    for i, space in enumerate(spaces):
        ax = fig.add_subplot(len(spaces), 1, i + 1)
        groups = [(space.generated.similarity, f'generated (n={len(space.generated.similarity)})', GENERATED_COLOUR)]
        if space.null is not None:
            groups.insert(0, (space.null.similarity, f'holdout: the null (n={len(space.null.similarity)})',
                              NULL_COLOUR))
        values = np.concatenate([g[0] for g in groups])
        lo, hi = float(values.min()), float(values.max())
        bins = np.linspace(lo - 1e-6, hi + 1e-6, 31) if hi > lo else 10
        for data, label, colour in groups:
            ax.hist(data, bins=bins, density=True, alpha=0.5, color=colour, label=label)
        if space.threshold is not None:
            ax.axvline(space.threshold, color=THRESHOLD_COLOUR, linestyle='--',
                       label=f'threshold {space.threshold:.4f} ({space.threshold_source})')
        ax.set_xlabel(space.description, fontsize=7, wrap=True)
        ax.set_ylabel('density', fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
