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

import dnnlib
from dnnlib.cli import FINITE_FLOAT
from volumes.contract import WRITE_FORMATS

@click.command(cls=dnnlib.cli.Command, help=__doc__)
@dnnlib.cli.network_option()
@click.option('--rows', help='Row seeds, e.g. 0-3', required=True)
@click.option('--cols', help='Column seeds, e.g. 10-13', required=True)
@click.option('--styles', help='Layers taken from the column seed, e.g. 0-3', show_default='the coarse half')
@click.option('--trunc', 'truncation_psi', help='Truncation psi', type=FINITE_FLOAT, default=1, show_default=True)
@click.option('--class', 'class_idx', help='Class index (conditional networks)', type=click.IntRange(min=0))
@click.option('--noise-mode', help='Noise inputs', type=click.Choice(['const', 'random', 'none']), default='const',
              show_default=True)
@click.option('--format', 'fmt', help='Volume file format', type=click.Choice(WRITE_FORMATS),
              default='nii.gz', show_default=True)
@dnnlib.cli.outdir_option('Where to write grid.png and the volumes (a new or empty folder)')
@dnnlib.cli.overwrite_option('style_mixing.py\'s earlier outputs in --outdir (ROW-COL volumes, grid.png)')
def main(network_pkl: str, rows: str, cols: str, styles: str | None, truncation_psi: float, class_idx: int | None,
         noise_mode: str, fmt: str, outdir: str, overwrite: bool,
         trust_pickle: bool) -> None:
    import torch

    import legacy
    from training import generation, visualize
    row_seeds = dnnlib.cli.parse_seeds(rows, param_hint='--rows')
    col_seeds = dnnlib.cli.parse_seeds(cols, param_hint='--cols')
    style_layers = generation.parse_range(styles) if styles is not None else None
    data = legacy.load_network_or_exit(network_pkl, trust_pickle=trust_pickle)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    G = data['G_ema'].to(device).eval()
    if style_layers is None:  # The coarse half: the layers that set the overall shape.
        style_layers = list(range(max(G.num_ws // 2, 1)))
    if max(style_layers) >= G.num_ws:
        raise click.BadParameter(f'the network has layers 0-{G.num_ws - 1}', param_hint='--styles')
    c = generation.class_labels(G, class_idx)
    outdir = dnnlib.cli.prepare_outdir(outdir, overwrite, generation.STYLE_MIXING_OUTPUTS)
    volumes = generation.style_mix(G, row_seeds, col_seeds, style_layers, c, truncation_psi, noise_mode, device)
    writer = generation.OutputWriter(outdir, fmt, G.volume_info)
    for row in row_seeds:
        for col in col_seeds:
            writer.write(volumes[(row, col)], f'{row}-{col}')
    grid = visualize.display_volumes(generation.mixing_grid(volumes, row_seeds, col_seeds), G.volume_info)
    generation.save_png(visualize.volume_grid(grid, (len(col_seeds) + 1, len(row_seeds) + 1), drange=(-1, 1),
                                              spacing=G.volume_info.spacing, min_size=visualize.PREVIEW_SIZE),
                        os.path.join(outdir, 'grid.png'))
    print(f'Wrote {len(row_seeds) * len(col_seeds)} mixed volumes and grid.png to {outdir}')


if __name__ == '__main__':
    main()
