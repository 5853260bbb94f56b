# SPDX-License-Identifier: Apache-2.0
"""Style mixing: volumes whose coarse or fine styles come from another seed.

Every row seed keeps its latent except in the chosen layer range, where the column seed's latent is used. The
grid PNG shows middle slices: column seeds along the top, row seeds down the left, mixes inside.

Example:

\b
  python style_mixing.py --network=G.pt --rows=0-3 --cols=10-13 --styles=0-5 --outdir=mix
"""

from __future__ import annotations

import os

import click
import numpy as np
import torch

import dnnlib
import legacy
from dnnlib.cli import FINITE_FLOAT
from generate import (FORMATS, class_labels, dataset_geometry, make_outdir, parse_seeds, save_png, seed_latents,
                      write_outputs)
from training import visualize


def parse_range(text: str) -> list[int]:
    """'0-6' -> [0, 1, 2, 3, 4, 5, 6]; also '2' and '0,3,5'."""
    try:
        return parse_seeds(text, param_hint='--styles')
    except click.BadParameter:
        raise click.BadParameter(f'"{text}" is not a layer range like 0-6', param_hint='--styles') from None


@torch.no_grad()
def style_mix(G, row_seeds: list[int], col_seeds: list[int], styles: list[int], c: torch.Tensor,
              truncation_psi: float, noise_mode: str, device: torch.device) -> dict:
    """Volumes [C, D, H, W] keyed by seed (the originals) and by (row, col) (the mixes)."""
    seeds = sorted(set(row_seeds + col_seeds))
    z = seed_latents(seeds, G.z_dim).to(device)  # The same z per seed as generate.py.
    ws = G.mapping(z, c.repeat(len(seeds), 1).to(device), truncation_psi=truncation_psi)  # [S, num_ws, w_dim]
    w_of = dict(zip(seeds, ws))
    volumes = {seed: G.synthesis(w_of[seed][None], noise_mode=noise_mode)[0].float().cpu().numpy() for seed in seeds}
    for row in row_seeds:
        for col in col_seeds:
            w = w_of[row].clone()
            w[styles] = w_of[col][styles]
            volumes[(row, col)] = G.synthesis(w[None], noise_mode=noise_mode)[0].float().cpu().numpy()
    return volumes


def mixing_grid(volumes: dict, row_seeds: list[int], col_seeds: list[int]) -> np.ndarray:
    """[(R+1)*(C+1), C, D, H, W]: a blank corner, column originals, then one row per row seed."""
    any_volume = next(iter(volumes.values()))
    tiles = [np.full_like(any_volume, -1)] + [volumes[col] for col in col_seeds]
    for row in row_seeds:
        tiles += [volumes[row]] + [volumes[(row, col)] for col in col_seeds]
    return np.stack(tiles)


@click.command(cls=dnnlib.cli.Command, help=__doc__)
@click.option('--network', 'network_pkl', help='Snapshot pickle (trusted: loading it runs code) or safe export',
              required=True)
@click.option('--rows', help='Row seeds, e.g. 0-3', required=True)
@click.option('--cols', help='Column seeds, e.g. 10-13', required=True)
@click.option('--styles', help='Layers taken from the column seed, e.g. 0-3  [default: the coarse half of them]')
@click.option('--trunc', 'truncation_psi', help='Truncation psi', type=FINITE_FLOAT, default=1, show_default=True)
@click.option('--class', 'class_idx', help='Class index (conditional networks)', type=click.IntRange(min=0))
@click.option('--noise-mode', help='Noise inputs', type=click.Choice(['const', 'random', 'none']), default='const',
              show_default=True)
@click.option('--format', 'fmt', help='Volume file format', type=click.Choice(FORMATS),
              default='nii.gz', show_default=True)
@click.option('--outdir', help='Where to write grid.png and the volumes', required=True, metavar='DIR')
def main(network_pkl: str, rows: str, cols: str, styles: str | None, truncation_psi: float, class_idx: int | None,
         noise_mode: str, fmt: str, outdir: str) -> None:
    row_seeds = parse_seeds(rows, param_hint='--rows')
    col_seeds = parse_seeds(cols, param_hint='--cols')
    style_layers = parse_range(styles) if styles is not None else None
    data = legacy.load_network_or_exit(network_pkl)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    G = data['G_ema'].to(device).eval()
    if style_layers is None:  # The coarse half: the layers that set the overall shape.
        style_layers = list(range(max(G.num_ws // 2, 1)))
    if max(style_layers) >= G.num_ws:
        raise click.BadParameter(f'the network has layers 0-{G.num_ws - 1}', param_hint='--styles')
    c = class_labels(G, class_idx)
    geometry = dataset_geometry(data, G)
    volumes = style_mix(G, row_seeds, col_seeds, style_layers, c, truncation_psi, noise_mode, device)
    make_outdir(outdir)
    for row in row_seeds:
        for col in col_seeds:
            write_outputs(volumes[(row, col)], f'{row}-{col}', outdir, fmt, geometry, preview=False)
    grid = mixing_grid(volumes, row_seeds, col_seeds)
    save_png(visualize.volume_grid(grid, (len(col_seeds) + 1, len(row_seeds) + 1), drange=(-1, 1)),
             os.path.join(outdir, 'grid.png'))
    print(f'Wrote {len(row_seeds) * len(col_seeds)} mixed volumes and grid.png to {outdir}')


if __name__ == '__main__':
    main()
