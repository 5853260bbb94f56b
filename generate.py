# SPDX-License-Identifier: Apache-2.0
"""Generate volumes with a trained network and write them as NIfTI (or NRRD/.npy) with a real affine.

Volumes get the voxel spacing, direction, centre and stored dtype (uint8 or uint16) of the training data from the
volume record the network carries (every snapshot and safe export holds it; the dataset is not needed), and come
back in source units (e.g. Hounsfield units) where the data was packed with a fixed --window. Seeds fix the volumes
whatever --batch is, also with --noise-mode=random.

Examples:

\b
  # Volumes for seeds 0-99, truncation 0.7, with previews.
  python generate.py --network=network-snapshot-000400.pkl --seeds=0-99 --trunc=0.7 --outdir=out --preview

\b
  # 5000 volumes for a downstream task, in batches of 16 on the GPU, keeping those that pass the QC filter.
  python generate.py --network=G.pt --count=5000 --batch=16 --outdir=synth --qc-data=prostate.zip --qc-ssim=0.4

\b
  # A raw nnU-Net v2 dataset of 750 labelled volumes, replacing an earlier export in that folder.
  python generate.py --network=G.pt --count=750 --layout=nnunet --outdir=Dataset501_Synth --overwrite

\b
  # Render a latent (and the noise) found by projector.py.
  python generate.py --network=G.pt --projected-w=proj/projected_w.npz --outdir=out
"""

from __future__ import annotations

import contextlib

import click

import dnnlib
from dnnlib.cli import FiniteFloatRange
from volumes.contract import WRITE_FORMATS


#----------------------------------------------------------------------------
# CLI.


@click.command(cls=dnnlib.cli.Command, help=__doc__)
@dnnlib.cli.network_option()
@dnnlib.cli.generation_options()
@click.option('--batch', help='Volumes per forward pass', type=click.IntRange(min=1), default=8, show_default=True)
@click.option('--format', 'fmt', help='Output file format', type=click.Choice(WRITE_FORMATS), default='nii.gz',
              show_default=True)
@click.option('--units', type=click.Choice(['auto', 'stored', 'source']), default='auto', show_default=True,
              help='Write the stored integers, or source units (e.g. Hounsfield units) for data packed with '
                   '--window; auto: source units where they can be recovered')
@click.option('--layout', type=click.Choice(['files', 'nnunet']), default='files', show_default=True,
              help='files: NAME.nii.gz (and NAME_seg.nii.gz, the packed label values); nnunet: a raw nnU-Net v2 '
                   'dataset (imagesTr, labelsTr with the labels renumbered 0, 1, 2, ... as nnU-Net needs, '
                   'dataset.json, and label_mapping.json from those numbers back to the packed values)')
@click.option('--preview', help='Also write a PNG of the middle axial, coronal and sagittal slices', is_flag=True)
@click.option('--projected-w', help='Render the latents (and noise) that projector.py wrote', metavar='NPZ',
              type=dnnlib.cli.PATH)
@click.option('--qc-data', help='Dataset for the quality-control filter', metavar='PATH', type=dnnlib.cli.PATH)
@click.option('--qc-ssim', help='Keep volumes whose best slice-wise SSIM to a real volume is at least this',
              type=FiniteFloatRange(min=-1, max=1))
@click.option('--exclude-copies', is_flag=True, help='Drop volumes audit.py would flag as copies of a training case '
              '(needs --data and --holdout) and generate replacements from the next seeds')
@click.option('--data', 'copies_data', help='--exclude-copies: the training set (TRAIN.zip)', metavar='PATH',
              type=dnnlib.cli.PATH)
@click.option('--holdout', 'copies_holdout', metavar='PATH', type=dnnlib.cli.PATH,
              help='--exclude-copies: real cases the model never saw, packed like --data')
@dnnlib.cli.outdir_option('Where to write the volumes (a new or empty folder)')
@dnnlib.cli.overwrite_option('generate.py\'s earlier outputs in --outdir (seed*, proj00*, imagesTr, labelsTr, '
                             'dataset.json, label_mapping.json)')
def main(network_pkl: str, trust_pickle: bool, seeds: str | None, count: int | None, truncation_psi: float,
         class_idx: int | None, noise_mode: str, batch: int, fmt: str, units: str, layout: str, preview: bool,
         projected_w: str | None, qc_data: str | None, qc_ssim: float | None, exclude_copies: bool,
         copies_data: str | None, copies_holdout: str | None, outdir: str, overwrite: bool) -> None:
    # Everything is checked before the output folder is made or cleared, so bad input leaves it as it was.
    if projected_w is not None and (seeds is not None or count is not None):
        raise click.BadParameter('renders the latents in the file; leave --seeds and --count out',
                                 param_hint='--projected-w')
    if projected_w is None and (seeds is None) == (count is None):
        raise click.BadParameter('give exactly one of --seeds and --count (or --projected-w)', param_hint='--seeds')
    if (qc_data is None) != (qc_ssim is None):
        raise click.BadParameter('--qc-data and --qc-ssim go together', param_hint='--qc-ssim')
    if exclude_copies and (copies_data is None or copies_holdout is None or projected_w is not None):
        raise click.BadParameter('needs --data and --holdout, and seeds (not --projected-w) to replace copies from',
                                 param_hint='--exclude-copies')
    if not exclude_copies and (copies_data is not None or copies_holdout is not None):
        raise click.BadParameter('--data and --holdout are for --exclude-copies', param_hint='--exclude-copies')
    import torch

    import legacy
    from training import generation
    seed_list = dnnlib.cli.parse_seeds(seeds) if seeds is not None else list(range(count or 0))
    data = legacy.load_network_or_exit(network_pkl, trust_pickle=trust_pickle)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    G = data['G_ema'].to(device).eval()
    if projected_w is not None:
        ws, noises = generation.load_projected_w(projected_w, G)
        generation.set_noise_buffers(G, noises)
    else:
        c = generation.class_labels(G, class_idx)
    qc = None
    if qc_data is not None:
        from metrics.ms_ssim import make_qc_filter
        try:
            qc = make_qc_filter(qc_data, qc_ssim, G, device)
        except (OSError, ValueError) as e:
            raise click.BadParameter(dnnlib.util.one_line(e, 240), param_hint='--qc-data') from None
    copies = None
    if exclude_copies:
        from metrics.memorization.copies import CopyFilter
        copies = CopyFilter(copies_data, copies_holdout, data, device)
    writer = generation.OutputWriter(outdir, fmt, G.volume_info, units=units, layout=layout, preview=preview)
    if overwrite:
        generation.check_dataset_json_is_ours(outdir)
    outdir = dnnlib.cli.prepare_outdir(outdir, overwrite, generation.GENERATE_OUTPUTS)

    if projected_w is not None:
        results, stem = generation.generate_from_ws(G, ws, noise_mode, device), 'proj{:02d}'
    else:
        def generate(chunk: list[int]):
            return generation.generate_from_seeds(G, chunk, c, truncation_psi, noise_mode, batch, device)
        results = generate(seed_list) if copies is None else copies.stream(generate, seed_list, batch)
        stem = 'seed{:04d}'
    dropped = 0
    with contextlib.closing(results):  # On an error, close the progress bar before the message is printed.
        for key, volume in results:
            if qc is not None and not qc(volume):
                dropped += 1
                continue
            writer.write(volume, stem.format(key))
    writer.close()
    qc_note = f'; the QC filter (best slice SSIM >= {qc_ssim}) dropped {dropped}' if qc is not None else ''
    print(f'Wrote {writer.written} volumes to {outdir}{qc_note}')
    if copies is not None:
        print(copies.note())
    if writer.note():
        print(writer.note())


if __name__ == '__main__':
    main()
