# SPDX-License-Identifier: Apache-2.0
"""What generate.py, style_mixing.py and projector.py share: seeds and latents, synthesis by seed, output files
(volumes with the training data's geometry and stored dtype, PNG previews), projected latents and the QC filter.

The functions raise click.BadParameter or click.ClickException where an option or a file is wrong, so the
command-line tools report them as one line.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterator

import click
import numpy as np
import PIL.Image
import torch
import tqdm

import dnnlib
import legacy
from training import visualize
from volumes.contract import IntensityMapping, VolumeInfo, format_size, from_network, from_unit
from volumes import volume_io


#----------------------------------------------------------------------------
# Parsing.


#----------------------------------------------------------------------------
# Output files.


def make_outdir(outdir: str) -> None:
    """Create the output folder, or stop with a one-line error when the path is a file or cannot be made."""
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.BadParameter(f'"{outdir}" is a file; expected a folder', param_hint='--outdir')
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as e:
        raise click.BadParameter(f'cannot create "{outdir}": {e.strerror or e}', param_hint='--outdir') from None
    dnnlib.util.remove_stale_temporaries(outdir)  # Left by a run killed while it wrote.


def save_png(image: PIL.Image.Image, path: str) -> None:
    """Write a PNG through a temporary file, so a failure never leaves half of one."""
    try:
        dnnlib.util.atomic_write(path, lambda f: image.save(f, format='PNG'))
    except OSError as e:
        raise click.ClickException(dnnlib.util.write_error_message(path, e)) from None


def write_volume_file(path: str, array: np.ndarray, info: VolumeInfo) -> None:
    """volume_io.write_volume (atomic, read back) with the record's geometry: the grid of `array` centred where the
    training volumes were; failures become one-line CLI errors."""
    try:
        volume_io.write_volume(path, array, info.spacing, info.direction, info.origin(array.shape[-3:]))
    except ValueError as e:
        raise click.ClickException(str(e) if str(e).startswith('cannot write') else f'cannot write {path}: {e}') \
            from None
    except OSError as e:
        raise click.ClickException(dnnlib.util.write_error_message(path, e)) from None


UNITS = ('auto', 'stored', 'source')
LAYOUTS = ('files', 'nnunet')


def source_dtype(intensity: IntensityMapping) -> np.dtype:
    """int16 for a window of whole numbers within int16 (Hounsfield units), else float32."""
    whole = float(intensity.lo).is_integer() and float(intensity.hi).is_integer()
    return np.dtype(np.int16) if whole and -32768 <= intensity.lo and intensity.hi <= 32767 else np.dtype(np.float32)


def resolve_units(units: str, info: VolumeInfo) -> str:
    """'stored' or 'source' for --units; auto: source units where the record's mapping can be inverted."""
    if units == 'source' and not info.intensity.invertible:
        raise click.BadParameter('the training data was clipped to per-volume percentiles, so its source units '
                                 'cannot be recovered; use --units=stored', param_hint='--units')
    if units == 'auto':
        return 'source' if info.intensity.invertible else 'stored'
    return units


class OutputWriter:
    """Writes generated volumes as files: the image (stored or source units), its label map, an upright preview.

    Layout 'files': NAME.<fmt> (all channels as one vector image), NAME_seg.<fmt>, NAME.png. Layout 'nnunet': a
    raw nnU-Net v2 dataset, imagesTr/NAME_0000.<fmt> (one file per channel), labelsTr/NAME.<fmt> and, at close(),
    dataset.json. Every file has the record's spacing, direction and centre.
    """

    def __init__(self, outdir: str, fmt: str, info: VolumeInfo, units: str = 'auto', layout: str = 'files',
                 preview: bool = False) -> None:
        self.outdir, self.fmt, self.info, self.preview, self.layout = outdir, fmt, info, preview, layout
        self.units = resolve_units(units, info)
        self.written = 0
        if layout == 'nnunet':
            if not info.label_values:
                raise click.BadParameter('the network makes no label maps, which an nnU-Net dataset needs; train on '
                                         'a dataset packed with --seg', param_hint='--layout')
            if fmt == 'npy':
                raise click.BadParameter('nnU-Net reads NIfTI, NRRD or MHA, not .npy', param_hint='--format')

    def image_array(self, image: np.ndarray) -> np.ndarray:
        """[C, D, H, W] in [-1, 1] -> the values written: stored integers, or source units."""
        stored = from_unit(image, self.info.dtype)
        if self.units == 'stored':
            return stored
        source = self.info.intensity.to_source(stored)
        dtype = source_dtype(self.info.intensity)
        return np.rint(source).astype(dtype) if dtype.kind == 'i' else source

    def write(self, volume: np.ndarray, stem: str) -> None:
        """Write one network volume [K, D, H, W] (image channels, then one-hot labels) under the name `stem`."""
        image, labels = from_network(volume, self.info)
        values = self.image_array(image)
        if self.layout == 'nnunet':
            for c, channel in enumerate(values):
                self._volume(os.path.join('imagesTr', f'{stem}_{c:04d}.{self.fmt}'), channel)
            self._volume(os.path.join('labelsTr', f'{stem}.{self.fmt}'), labels)
        else:
            self._volume(f'{stem}.{self.fmt}', values[0] if len(values) == 1 else values)  # [D, H, W] or vector.
            if labels is not None:
                self._volume(f'{stem}_seg.{self.fmt}', labels)
            if self.preview:
                shown = visualize.display_volumes(volume[None], self.info)
                grid = visualize.volume_grid(shown, (1, 1), (-1, 1), planes=visualize.PLANES, spacing=self.info.spacing)
                save_png(grid, os.path.join(self.outdir, f'{stem}.png'))
        self.written += 1

    def _volume(self, name: str, array: np.ndarray) -> None:
        path = os.path.join(self.outdir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_volume_file(path, array, self.info)

    def close(self) -> None:
        """Finish the layout: nnU-Net's dataset.json (channels, labels, the number of cases, the file ending)."""
        if self.layout != 'nnunet':
            return
        labels = {'background': 0, **{name: value for value, name in sorted(self.info.label_names.items())}}
        description = dict(channel_names={str(c): name for c, name in enumerate(self.info.channels)}, labels=labels,
                           numTraining=self.written, file_ending=f'.{self.fmt}',
                           name='stylegan2-ada-3d synthetic', description='Generated by stylegan2-ada-3d generate.py')
        path = os.path.join(self.outdir, 'dataset.json')
        try:
            dnnlib.util.atomic_write_text(path, json.dumps(description, indent=2))
        except OSError as e:
            raise click.ClickException(dnnlib.util.write_error_message(path, e)) from None

    def note(self) -> str | None:
        """What to tell the user about the units written, or None."""
        if self.units == 'source':
            intensity = self.info.intensity
            return (f'Volumes are in source units ({intensity.lo:g}..{intensity.hi:g}, '
                    f'{source_dtype(intensity).name}), the training data\'s window.')
        if not self.info.intensity.invertible:
            return (f'Volumes are in the stored units of the training data ({self.info.dtype}, 0..'
                    f'{self.info.max_value}): it was clipped to per-volume percentiles, so source units cannot be '
                    f'recovered.')
        return None


#----------------------------------------------------------------------------
# Generation.


def class_labels(G, class_idx: int | None) -> torch.Tensor:
    """The one-hot label [1, c_dim] for --class, or an error saying why --class is wrong or missing."""
    if G.c_dim == 0:
        if class_idx is not None:
            raise click.BadParameter('the network is unconditional; leave --class out', param_hint='--class')
        return torch.zeros([1, 0])
    if class_idx is None:
        raise click.BadParameter(f'the network is conditional ({G.c_dim} classes); give --class',
                                 param_hint='--class')
    if not 0 <= class_idx < G.c_dim:
        raise click.BadParameter(f'{class_idx} is not in [0, {G.c_dim})', param_hint='--class')
    c = torch.zeros([1, G.c_dim])
    c[0, class_idx] = 1
    return c


def seed_latents(seeds: list[int], z_dim: int) -> torch.Tensor:
    """z [N, z_dim] with row i drawn from RandomState(seeds[i]), as the official generate.py."""
    return torch.from_numpy(np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds])).float()


def _rng_devices(device: torch.device) -> list[int]:
    if device.type != 'cuda':
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def synthesise(G, z: torch.Tensor, c: torch.Tensor, seeds: list[int], truncation_psi: float,
               noise_mode: str) -> torch.Tensor:
    """G(z, c) [N, C, D, H, W]. With random noise, each volume draws its noise from a generator seeded by its seed.

    The layers draw random noise from torch's global generator, batch-wide; seeding it per volume (and
    restoring it afterwards) makes a seed's volume independent of --batch at the cost of one pass per volume.
    """
    if noise_mode != 'random':
        return G(z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
    volumes = []
    for i, seed in enumerate(seeds):
        with torch.random.fork_rng(devices=_rng_devices(z.device)):
            torch.manual_seed(seed)
            volumes.append(G(z[i:i + 1], c[i:i + 1], truncation_psi=truncation_psi, noise_mode='random'))
    return torch.cat(volumes)


@torch.no_grad()
def generate_from_seeds(G, seeds: list[int], c: torch.Tensor, truncation_psi: float, noise_mode: str,
                        batch: int, device: torch.device, progress: bool = True) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (seed, [C, D, H, W] float volume) for every seed, computed in batches; reproducible by seed."""
    # disable=None: a bar only on a terminal, not in the logs of batch jobs (whose errors stay one line).
    with tqdm.tqdm(total=len(seeds), desc='Generating', unit='vol', disable=None if progress else True) as bar:
        for start in range(0, len(seeds), batch):
            chunk = seeds[start:start + batch]
            z = seed_latents(chunk, G.z_dim).to(device)
            volumes = synthesise(G, z, c.repeat(len(chunk), 1).to(device), chunk, truncation_psi, noise_mode)
            bar.update(len(chunk))
            for seed, volume in zip(chunk, volumes.float().cpu().numpy()):
                yield seed, volume


@torch.no_grad()
def generate_from_ws(G, ws: torch.Tensor, noise_mode: str, device: torch.device) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (index, [C, D, H, W] volume) for every w [num_ws, w_dim] of ws [N, num_ws, w_dim]."""
    for idx, w in enumerate(ws):
        yield idx, G.synthesis(w[None].to(device), noise_mode=noise_mode)[0].float().cpu().numpy()

#----------------------------------------------------------------------------
# Projected latents.


def noise_buffers(G) -> dict[str, torch.Tensor]:
    """The constant noise inputs of G's synthesis network, by buffer name."""
    return {name: buf for name, buf in G.synthesis.named_buffers() if name.endswith('noise_const')}


def set_noise_buffers(G, noises: dict[str, torch.Tensor]) -> None:
    """Copy projector.py's optimised noise into G's constant noise inputs (used by noise_mode='const')."""
    buffers = noise_buffers(G)
    with torch.no_grad():
        for name, noise in noises.items():
            buffers[name].copy_(noise)


def load_projected_w(path: str, G) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """ws [N, num_ws, w_dim] from key "w" of projector.py's .npz, and its noise (keys "noise/NAME"), if any."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            ws = torch.from_numpy(np.asarray(npz['w'], dtype=np.float32))
            noises = {key[len('noise/'):]: torch.from_numpy(np.asarray(npz[key], dtype=np.float32))
                      for key in npz.files if key.startswith('noise/')}
    except (OSError, KeyError, ValueError, EOFError) as e:
        raise click.BadParameter(f'cannot read key "w" from {path}: {legacy.one_line(e)}',
                                 param_hint='--projected-w') from None
    if ws.ndim != 3 or tuple(ws.shape[1:]) != (G.num_ws, G.w_dim):
        raise click.BadParameter(f'{path} holds w of shape {tuple(ws.shape)}; this network needs '
                                 f'[N, {G.num_ws}, {G.w_dim}]', param_hint='--projected-w')
    buffers = noise_buffers(G)
    for name, noise in noises.items():
        if name not in buffers or tuple(noise.shape) != tuple(buffers[name].shape):
            raise click.BadParameter(f'{path} holds noise "{name}" of shape {tuple(noise.shape)}, which this '
                                     f'network does not have', param_hint='--projected-w')
    return ws, noises

#----------------------------------------------------------------------------
# Quality control.


def make_qc_filter(qc_data: str, threshold: float, G, device: torch.device) -> Callable[[np.ndarray], bool]:
    """The prostate paper's QC: keep a volume if its best mean slice SSIM to any real volume >= threshold.

    The generated volume is compared as it will be written (clipped to the stored range); the real volumes stay
    in their stored dtype in CPU memory and go to `device` a batch at a time, where the SSIM is computed.
    """
    from metrics.ms_ssim import best_slice_ssim
    from volumes.packed import PackedDataset
    try:
        dataset = PackedDataset(qc_data)
    except (OSError, ValueError) as e:
        raise click.BadParameter(legacy.one_line(e), param_hint='--qc-data') from None
    if dataset.img_shape != tuple(G.img_shape):
        raise click.BadParameter(f'{qc_data} holds volumes of size {format_size(dataset.img_shape)}; the network '
                                 f'makes {format_size(G.img_shape)}', param_hint='--qc-data')
    if dataset.num_channels != len(G.volume_info.channels):
        raise click.BadParameter(f'{qc_data} has {dataset.num_channels} channels; the network makes '
                                 f'{len(G.volume_info.channels)}', param_hint='--qc-data')
    try:
        reals = torch.from_numpy(np.stack([dataset.volume(i) for i in range(len(dataset))]))  # [N, C, D, H, W]
    except (OSError, ValueError) as e:
        raise click.BadParameter(legacy.one_line(e), param_hint='--qc-data') from None
    info = dataset.volume_info

    def keep(volume: np.ndarray) -> bool:
        stored = from_unit(volume[:dataset.num_channels], info.dtype).astype(np.float32)  # [C, D, H, W] as written
        return best_slice_ssim(torch.from_numpy(stored).to(device), reals, data_range=info.max_value) >= threshold
    return keep

#----------------------------------------------------------------------------
# Style mixing.


def parse_range(text: str) -> list[int]:
    """'0-6' -> [0, 1, 2, 3, 4, 5, 6]; also '2' and '0,3,5'."""
    try:
        return dnnlib.cli.parse_seeds(text, param_hint='--styles')
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
