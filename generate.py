# SPDX-License-Identifier: Apache-2.0
"""Generate volumes with a trained network and write them as NIfTI (or NRRD/.npy) with a real affine.

Examples:

\b
  # Volumes for seeds 0-99, truncation 0.7, with previews.
  python generate.py --network=network-snapshot-000400.pkl --seeds=0-99 --trunc=0.7 --outdir=out --preview

\b
  # 5000 volumes for a downstream task, in batches of 16 on the GPU, keeping those that pass the QC filter.
  python generate.py --network=G.pt --count=5000 --batch=16 --outdir=synth --qc-data=prostate.zip --qc-ssim=0.4

\b
  # Render a latent found by projector.py.
  python generate.py --network=G.pt --projected-w=proj/projected_w.npz --outdir=out
"""

from __future__ import annotations

import json
import os
import re
import zipfile

import click
import numpy as np
import torch
import tqdm

import legacy
from training import visualize, volume_io

FORMATS = ('nii.gz', 'nii', 'nrrd', 'npy')

#----------------------------------------------------------------------------
# Parsing.


def parse_seeds(text: str) -> list[int]:
    """'0-3,9' -> [0, 1, 2, 3, 9]."""
    seeds: list[int] = []
    for part in text.split(','):
        part = part.strip()
        match = re.fullmatch(r'(\d+)(?:-(\d+))?', part)
        if match is None:
            raise click.BadParameter(f'"{part}" is not a seed or a range like 0-9', param_hint='--seeds')
        lo, hi = int(match.group(1)), int(match.group(2) or match.group(1))
        if hi < lo:
            raise click.BadParameter(f'range "{part}" runs backwards', param_hint='--seeds')
        seeds.extend(range(lo, hi + 1))
    return seeds

#----------------------------------------------------------------------------
# Volume metadata: spacing and orientation of the training data.


def dataset_geometry(training_set_kwargs: dict | None, G) -> dict:
    """Spacing, direction and stored range: from the dataset's dataset.json when it is reachable, else from G."""
    info = None
    path = (training_set_kwargs or {}).get('path')
    if path and os.path.isfile(path) and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            if 'dataset.json' in z.namelist():
                info = json.loads(z.read('dataset.json'))
    elif path and os.path.isfile(os.path.join(path, 'dataset.json')):
        with open(os.path.join(path, 'dataset.json')) as f:
            info = json.load(f)
    spacing = getattr(G, 'voxel_spacing', None) or (info or {}).get('spacing') or (1.0, 1.0, 1.0)
    return dict(spacing=[float(s) for s in spacing],
                direction=(info or {}).get('direction', volume_io.CANONICAL_DIRECTION),
                dtype=(info or {}).get('dtype', 'uint8'))


def to_stored_range(volume: np.ndarray, dtype: str) -> np.ndarray:
    """[-1, 1] floats -> the dataset's stored integers (uint8 or uint16)."""
    max_value = np.iinfo(dtype).max
    return np.rint((volume + 1) * (max_value / 2)).clip(0, max_value).astype(dtype)


def make_outdir(outdir: str) -> None:
    """Create the output folder, or stop with a one-line error when the path is a file."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.BadParameter(f'"{outdir}" is a file; expected a folder', param_hint='--outdir')
    os.makedirs(outdir, exist_ok=True)


def write_outputs(volume: np.ndarray, stem: str, outdir: str, fmt: str, geometry: dict, preview: bool) -> None:
    """Write one [C, D, H, W] volume in [-1, 1] (and its preview PNG)."""
    stored = to_stored_range(volume, geometry['dtype'])
    array = stored[0] if stored.shape[0] == 1 else stored
    volume_io.write_volume(os.path.join(outdir, f'{stem}.{fmt}'), array, geometry['spacing'], geometry['direction'])
    if preview:
        visualize.volume_grid(volume[None], (1, 1), (-1, 1), planes=visualize.PLANES).save(
            os.path.join(outdir, f'{stem}.png'))

#----------------------------------------------------------------------------
# Generation.


def class_labels(G, class_idx: int | None) -> torch.Tensor:
    if G.c_dim == 0:
        if class_idx is not None:
            raise click.BadParameter('the network is unconditional; leave --class out', param_hint='--class')
        return torch.zeros([1, 0])
    if class_idx is None:
        raise click.BadParameter(f'the network is conditional ({G.c_dim} classes); give --class',
                                 param_hint='--class')
    if not 0 <= class_idx < G.c_dim:
        raise click.BadParameter(f'must be in [0, {G.c_dim})', param_hint='--class')
    c = torch.zeros([1, G.c_dim])
    c[0, class_idx] = 1
    return c


@torch.no_grad()
def generate_from_seeds(G, seeds: list[int], c: torch.Tensor, truncation_psi: float, noise_mode: str,
                        batch: int, device: torch.device, progress: bool = True):
    """Yield (seed, [C, D, H, W] float volume) for every seed, computed in batches; reproducible by seed."""
    for start in tqdm.trange(0, len(seeds), batch, desc='Generating', unit='batch', disable=not progress):
        chunk = seeds[start:start + batch]
        z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(G.z_dim) for s in chunk])).float()
        volumes = G(z.to(device), c.repeat(len(chunk), 1).to(device), truncation_psi=truncation_psi,
                    noise_mode=noise_mode)
        for seed, volume in zip(chunk, volumes.float().cpu().numpy()):
            yield seed, volume


@torch.no_grad()
def generate_from_ws(G, ws: torch.Tensor, noise_mode: str, device: torch.device):
    for idx, w in enumerate(ws):
        yield idx, G.synthesis(w[None].to(device), noise_mode=noise_mode)[0].float().cpu().numpy()

#----------------------------------------------------------------------------
# CLI.


@click.command(help=__doc__)
@click.option('--network', 'network_pkl', help='Snapshot pickle (trusted: loading it runs code) or safe export',
              required=True)
@click.option('--seeds', help='Seeds, e.g. 0-99,200')
@click.option('--count', help='Generate seeds 0..N-1', type=click.IntRange(min=1))
@click.option('--trunc', 'truncation_psi', help='Truncation psi', type=float, default=1, show_default=True)
@click.option('--class', 'class_idx', help='Class index (conditional networks)', type=click.IntRange(min=0))
@click.option('--noise-mode', help='Noise inputs', type=click.Choice(['const', 'random', 'none']), default='const',
              show_default=True)
@click.option('--batch', help='Volumes per forward pass', type=click.IntRange(min=1), default=8, show_default=True)
@click.option('--format', 'fmt', help='Output file format', type=click.Choice(FORMATS), default='nii.gz',
              show_default=True)
@click.option('--preview', help='Also write a PNG of the middle axial, coronal and sagittal slices', is_flag=True)
@click.option('--projected-w', help='Render the latents of projector.py (an .npz with key "w")', metavar='NPZ')
@click.option('--qc-data', help='Dataset for the quality-control filter', metavar='PATH')
@click.option('--qc-ssim', help='Keep volumes whose best slice-wise SSIM to a real volume is at least this',
              type=click.FloatRange(min=-1, max=1))
@click.option('--outdir', help='Where to write the volumes', required=True, metavar='DIR')
def main(network_pkl: str, seeds: str | None, count: int | None, truncation_psi: float, class_idx: int | None,
         noise_mode: str, batch: int, fmt: str, preview: bool, projected_w: str | None, qc_data: str | None,
         qc_ssim: float | None, outdir: str) -> None:
    if projected_w is None and (seeds is None) == (count is None):
        raise click.BadParameter('give exactly one of --seeds and --count (or --projected-w)', param_hint='--seeds')
    if (qc_data is None) != (qc_ssim is None):
        raise click.BadParameter('--qc-data and --qc-ssim go together', param_hint='--qc-ssim')
    seed_list = parse_seeds(seeds) if seeds is not None else list(range(count or 0))
    data = legacy.load_network_or_exit(network_pkl)
    device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    G = data['G_ema'].to(device).eval()
    geometry = dataset_geometry(data['training_set_kwargs'], G)
    qc = make_qc_filter(qc_data, qc_ssim) if qc_data is not None else None
    make_outdir(outdir)

    if projected_w is not None:
        ws = load_projected_w(projected_w, G)
        results, stem = generate_from_ws(G, ws, noise_mode, device), 'proj{:02d}'
    else:
        c = class_labels(G, class_idx)
        results, stem = generate_from_seeds(G, seed_list, c, truncation_psi, noise_mode, batch, device), 'seed{:04d}'
    written = dropped = 0
    for key, volume in results:
        if qc is not None and not qc(volume):
            dropped += 1
            continue
        write_outputs(volume, stem.format(key), outdir, fmt, geometry, preview)
        written += 1
    print(f'Wrote {written} volumes to {outdir}' + (f'; the QC filter dropped {dropped}' if qc is not None else ''))


def load_projected_w(path: str, G) -> torch.Tensor:
    try:
        ws = torch.from_numpy(np.load(path)['w']).float()
    except (OSError, KeyError, ValueError) as e:
        raise click.BadParameter(f'cannot read key "w" from {path}: {e}', param_hint='--projected-w') from None
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise click.BadParameter(f'{path} holds w of shape {tuple(ws.shape)}; this network needs '
                                 f'[N, {G.num_ws}, {G.w_dim}]', param_hint='--projected-w')
    return ws


def make_qc_filter(qc_data: str, threshold: float):
    """The prostate paper's QC: keep a volume if its best mean slice SSIM to any real volume >= threshold."""
    from metrics.ms_ssim import best_slice_ssim
    from training.dataset import VolumeFolderDataset
    try:
        dataset = VolumeFolderDataset(qc_data)
    except (OSError, ValueError) as e:
        raise click.BadParameter(f'cannot read {qc_data}: {e}', param_hint='--qc-data') from None
    reals = np.stack([dataset[i][0] for i in range(len(dataset))]).astype(np.float32)
    reals = torch.from_numpy(reals * (2 / dataset.max_value) - 1)  # [N, C, D, H, W] in [-1, 1]

    def keep(volume: np.ndarray) -> bool:
        return best_slice_ssim(torch.from_numpy(volume), reals) >= threshold
    return keep


if __name__ == '__main__':
    main()
