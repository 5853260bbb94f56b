# SPDX-License-Identifier: Apache-2.0
"""Project a real volume into the generator's W space (plus its noise inputs) by optimisation.

The loss is 3D-StyleGAN's: mean squared error at full resolution plus at a 2x down-sampled resolution, and the
official noise regularisation (squared autocorrelation of every noise buffer at each level of a pyramid), with
the official learning-rate ramps and latent noise schedule. It writes projected_w.npz (w and the optimised
noise; `generate.py --projected-w` renders both), proj.nii.gz (the reconstruction, with the training data's
geometry) and proj.png (middle slices of the target, left, and the reconstruction, right).

Example:

\b
  python projector.py --network=G.pt --target=case_007.nii.gz --num-steps=1000 --outdir=proj
  python generate.py --network=G.pt --projected-w=proj/projected_w.npz --outdir=proj/rendered
"""

from __future__ import annotations

import os

import click

import dnnlib

@click.command(cls=dnnlib.cli.Command, help=__doc__)
@dnnlib.cli.network_option()
@click.option('--target', help='Volume to project: NIfTI, NRRD, MHA or .npy, a DICOM series folder, or one of its '
              'files', required=True, metavar='PATH',
              type=dnnlib.cli.PATH)
@click.option('--class', 'class_idx', help='Class index (conditional networks)', type=click.IntRange(min=0))
@click.option('--num-steps', help='Optimisation steps', type=click.IntRange(min=1), default=1000, show_default=True)
@click.option('--seed', help='Random seed', type=click.IntRange(min=0, max=2**32 - 1), default=303,
              show_default=True)
@dnnlib.cli.outdir_option('Where to write projected_w.npz, proj.nii.gz and proj.png (a new or empty folder)')
@dnnlib.cli.overwrite_option('projector.py\'s earlier outputs in --outdir (projected_w.npz, proj.nii.gz, '
                             'proj_seg.nii.gz, proj.png)')
def main(network_pkl: str, target: str, class_idx: int | None, num_steps: int, seed: int, outdir: str,
         overwrite: bool, trust_pickle: bool) -> None:
    import numpy as np
    import torch

    import legacy
    from training import generation, projection, visualize
    data = legacy.load_network_or_exit(network_pkl, trust_pickle=trust_pickle)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    G = data['G_ema']
    c = generation.class_labels(G, class_idx)
    target_volume = projection.load_target(target, G)
    # Before the optimisation, so a used or unusable folder is reported at once.
    outdir = dnnlib.cli.prepare_outdir(outdir, overwrite, generation.PROJECTOR_OUTPUTS)
    w, noises, losses = projection.project(G, target_volume, c=c, num_steps=num_steps, seed=seed, device=device,
                                           verbose=True)
    with torch.no_grad():
        G = G.to(device)
        generation.set_noise_buffers(G, noises)
        proj = G.synthesis(w[None].to(device), noise_mode='const')[0].float().cpu().numpy()
    projection.save_projection(os.path.join(outdir, 'projected_w.npz'), w, noises)
    generation.OutputWriter(outdir, 'nii.gz', G.volume_info).write(proj, 'proj')
    pair = np.stack([target_volume.numpy(), proj])  # [2, C, D, H, W]: before, after
    generation.save_png(visualize.volume_grid(pair, (2, 1), (-1, 1), planes=visualize.PLANES,
                                              spacing=G.volume_info.spacing, min_size=visualize.PREVIEW_SIZE),
                        os.path.join(outdir, 'proj.png'))
    print(f'MSE {losses[0]:.5f} -> {losses[-1]:.5f}; wrote projected_w.npz, proj.nii.gz and proj.png to {outdir}')


if __name__ == '__main__':
    main()
