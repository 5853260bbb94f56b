# SPDX-License-Identifier: Apache-2.0
"""What the audit reads: packed training and holdout sets, generated volumes (from a network, by seed, or from the
files generate.py wrote), all as stored integers [N, C, D, H, W] on the packed grid so they compare like with like.

Errors are InputError (a ValueError) with one line and the option it is about (--data, --holdout, --generated,
--network).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterator

import numpy as np
import SimpleITK as sitk
import torch

from volumes import volume_io
from volumes.contract import VolumeInfo, format_size, from_network, from_unit, to_network
from volumes.packed import PackedDataset



class InputError(ValueError):
    """A bad input: `option` names it, the message says what is wrong."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f'{option}: {message}')
        self.option, self.message = option, message

#----------------------------------------------------------------------------
# Packed sets.


@dataclasses.dataclass
class PackedSet:
    """A packed dataset read whole: its volumes [N, C, D, H, W] (stored dtype), case names and content hashes."""
    path: str
    option: str
    dataset: PackedDataset
    volumes: np.ndarray
    names: list[str]
    hashes: list[str]

    @property
    def info(self) -> VolumeInfo:
        return self.dataset.volume_info

    @property
    def img_shape(self) -> tuple[int, int, int]:
        return self.dataset.img_shape

    def check_discriminator_inputs(self, info: VolumeInfo, c_dim: int) -> None:
        """The label maps and class labels a discriminator of a network with record `info` reads are here;
        ValueError otherwise."""
        if info.label_values and self.info.label_values != info.label_values:
            raise InputError(self.option, f'{self.path} holds label maps with values {list(self.info.label_values)}; '
                                          f'the network\'s D reads {list(info.label_values)} (pack it with --seg as '
                                          f'the training data)')
        if c_dim and self.dataset.class_labels() is None:
            raise InputError(self.option, f'{self.path} has no class labels; the network is conditional')

    def network_batches(self, info: VolumeInfo, c_dim: int, batch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(volumes [B, K, D, H, W] as the networks see them, labels [B, c_dim]) for a discriminator: image
        channels in [-1, 1], then the label map one-hot where the network makes label maps (checked first by
        check_discriminator_inputs)."""
        labels = self.dataset.class_labels() if c_dim else None
        for start in range(0, len(self.volumes), batch):
            stored = self.volumes[start:start + batch]
            if info.label_values:  # The label map is channel C of the stored form.
                maps = np.stack([self.dataset.label_map(i) for i in range(start, start + len(stored))])
                stored = np.concatenate([stored, maps[:, None].astype(stored.dtype)], axis=1)
            volumes = to_network(stored, self.info if info.label_values else dataclasses.replace(self.info,
                                                                                                  label_names=None))
            c = np.zeros([len(stored), c_dim], dtype=np.float32)
            if c_dim:
                chunk = labels[start:start + len(stored)]
                if chunk.ndim == 1:
                    c[np.arange(len(chunk)), chunk] = 1
                else:
                    c[:] = chunk
            yield torch.from_numpy(np.asarray(volumes, dtype=np.float32)), torch.from_numpy(c)


def read_packed(path: str, option: str) -> PackedSet:
    """Open a packed dataset and read every volume (and the SHA-256 of its bytes)."""
    try:
        dataset = PackedDataset(os.path.expanduser(path))
        volumes = np.empty([len(dataset), *dataset.shape], dtype=dataset.dtype)  # [N, C, D, H, W]
        hashes = []
        for i in range(len(dataset)):
            volumes[i] = dataset.volume(i)
            hashes.append(hashlib.sha256(np.ascontiguousarray(volumes[i]).tobytes()).hexdigest())
    except (OSError, ValueError) as e:
        raise InputError(option, " ".join(str(e).split())) from None
    return PackedSet(path, option, dataset, volumes, dataset.case_names, hashes)


def _spacing(values) -> str:
    return 'x'.join(f'{v:g}' for v in values) + ' mm'


def _intensity(info: VolumeInfo) -> str:
    i = info.intensity
    return f'{i.dtype} {"window" if i.invertible else "percentiles"} {i.lo:g}..{i.hi:g}'


def packing_difference(train: PackedSet, other: PackedSet) -> str | None:
    """How `other` was packed differently from the training set (the first difference), or None."""
    a, b = train.info, other.info
    checks = [
        ('size', format_size(train.img_shape), format_size(other.img_shape)),
        ('channels', ', '.join(a.channels), ', '.join(b.channels)),
        ('spacing', _spacing(a.spacing), _spacing(b.spacing)),
        ('intensity mapping', _intensity(a), _intensity(b)),
        ('orientation handling (--orient)', a.orient, b.orient),
        ('interpolation', a.interpolation, b.interpolation),
    ]
    for field, mine, theirs in checks:
        if field == 'spacing' and np.allclose(a.spacing, b.spacing, rtol=1e-4):
            continue
        if mine != theirs:
            return f'{field} {theirs}, the training data {mine}'
    return None


def check_holdout(train: PackedSet, holdout: PackedSet) -> None:
    """The holdout must be packed like the training set and share no case with it; ValueError otherwise."""
    difference = packing_difference(train, holdout)
    if difference is not None:
        raise InputError('--holdout', f'{holdout.path} was packed differently from --data {train.path}: {difference}; '
                                      f'pack both with the same dataset_tool.py options')
    by_hash = {h: name for h, name in zip(train.hashes, train.names)}
    shared = [(name, by_hash[h]) for h, name in zip(holdout.hashes, holdout.names) if h in by_hash]
    if shared:
        more = f' ({len(shared)} such cases)' if len(shared) > 1 else ''
        raise InputError('--holdout', f'case {shared[0][0]} holds the same voxels as training case {shared[0][1]}'
                                      f'{more}; a holdout must hold cases the model never saw, or the calibration is '
                                      f'wrong')

#----------------------------------------------------------------------------
# Generated volumes: files written by generate.py.


def generated_files(folder: str) -> list[tuple[str, list[str]]]:
    """The volumes generate.py wrote in `folder`, sorted by name, as (name, files): NAME.<ext> (one file, all
    channels) in its files layout, imagesTr/NAME_0000.<ext>, NAME_0001.<ext>, ... (a file per channel) in its nnU-Net
    layout; label maps (NAME_seg.<ext>, labelsTr), previews and hidden temporaries left out."""
    if not os.path.isdir(folder):
        raise InputError('--generated', f'{folder} is not a folder')
    nnunet = os.path.isdir(os.path.join(folder, 'imagesTr'))
    where = os.path.join(folder, 'imagesTr') if nnunet else folder
    cases: dict[str, list[str]] = {}
    for name in sorted(os.listdir(where)):
        stem = volume_io.strip_extension(name)
        if volume_io.volume_extension(name) is None or name.startswith('.') or stem.endswith('_seg') or \
                not os.path.isfile(os.path.join(where, name)):
            continue
        if nnunet:  # NAME_0000: the case, then the channel.
            stem = stem.rsplit('_', 1)[0] if '_' in stem else stem
        cases.setdefault(stem, []).append(os.path.join(where, name))
    if not cases:
        raise InputError('--generated', f'{folder} holds no volumes (NAME.nii.gz and the like, or an nnU-Net imagesTr '
                                        f'folder, as generate.py writes)')
    return sorted(cases.items())


def read_generated(paths: list[str], info: VolumeInfo, img_shape: tuple[int, int, int]) -> np.ndarray:
    """One generated volume (a file, or a file per channel) as stored integers [C, D, H, W] on the packed grid:
    source units mapped back through the training data's window; InputError when its grid or units cannot be
    compared."""
    channels = []
    for path in paths:
        image = volume_io.read_image(path, allow_channels=True)
        size = 'x'.join(str(s) for s in image.GetSize())
        if size != format_size(img_shape):
            raise InputError('--generated', f'{path} has size {size}; the training data\'s grid is '
                                            f'{format_size(img_shape)}')
        if not np.allclose(image.GetSpacing(), info.spacing, rtol=1e-4) or \
                not np.allclose(image.GetDirection(), info.direction, atol=1e-4):
            orientation = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
            raise InputError('--generated', f'{path} has spacing {_spacing(image.GetSpacing())} and orientation '
                                            f'{orientation}; the training data\'s grid has {_spacing(info.spacing)}, '
                                            f'{info.orientation}')
        array = sitk.GetArrayFromImage(image)  # [D, H, W] or [D, H, W, C], the file's dtype
        channels.append(np.moveaxis(array, -1, 0) if image.GetNumberOfComponentsPerPixel() > 1 else array[None])
    array = np.concatenate(channels)  # [C, D, H, W]
    if len(array) != len(info.channels):
        raise InputError('--generated', f'{paths[0]} has {len(array)} channel{"s" if len(array) > 1 else ""}; the '
                                        f'training data has {len(info.channels)}')
    return to_stored(array, info, paths[0])


def to_stored(array: np.ndarray, info: VolumeInfo, path: str) -> np.ndarray:
    """Values as a generated file holds them -> the stored integers: stored units as they are, source units through
    the training data's window (the inverse of generate.py --units source)."""
    stored = np.dtype(info.dtype)
    if array.dtype == stored:
        return array
    if not info.intensity.invertible:
        raise InputError('--generated', f'{path} holds {array.dtype} values, not the stored {info.dtype} of the '
                                        f'training data, whose per-volume percentile clipping cannot be mapped back; '
                                        f'write the volumes with generate.py --units stored')
    return np.stack([info.intensity.to_stored(channel, path) for channel in array])


def file_batches(cases: list[tuple[str, list[str]]], info: VolumeInfo, img_shape: tuple[int, int, int],
                 batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names, stored volumes [B, C, D, H, W]) of generated_files' cases, `batch` at a time."""
    for start in range(0, len(cases), batch):
        chunk = cases[start:start + batch]
        try:
            volumes = [read_generated(paths, info, img_shape) for _, paths in chunk]
        except InputError:
            raise
        except ValueError as e:  # Unreadable, truncated, not 3D, NaN voxels.
            raise InputError('--generated', ' '.join(str(e).split())) from None
        yield [name for name, _ in chunk], np.stack(volumes)

#----------------------------------------------------------------------------
# Generated volumes: a network, by seed.


def check_network(G, train: PackedSet) -> None:
    """The network makes volumes of the training data's grid, channels and stored dtype; ValueError otherwise."""
    if tuple(G.img_shape) != tuple(train.img_shape):
        raise InputError('--network', f'makes {format_size(G.img_shape)} volumes; --data {train.path} holds '
                         f'{format_size(train.img_shape)}')
    if len(G.volume_info.channels) != train.volumes.shape[1]:
        raise InputError('--network', f'makes {len(G.volume_info.channels)} image channels; --data {train.path} holds '
                         f'{train.volumes.shape[1]}')
    if G.volume_info.dtype != train.info.dtype:
        raise InputError('--network', f'writes {G.volume_info.dtype} volumes; --data {train.path} stores '
                         f'{train.info.dtype}: is it the data the network was trained on?')


def network_batches(G, seeds: list[int], c: torch.Tensor, truncation_psi: float, noise_mode: str, batch: int,
                    device: torch.device) -> Iterator[tuple[list[str], np.ndarray]]:
    """(names seedNNNN, stored volumes [B, C, D, H, W]) of the volumes generate.py would write for these seeds."""
    from training import generation
    info = G.volume_info
    results = generation.generate_from_seeds(G, seeds, c, truncation_psi, noise_mode, batch, device)
    names, volumes = [], []
    for seed, volume in results:
        image, _ = from_network(volume, info)
        names.append(f'seed{seed:04d}')
        volumes.append(from_unit(image, info.dtype))
        if len(volumes) == batch:
            yield names, np.stack(volumes)
            names, volumes = [], []
    if volumes:
        yield names, np.stack(volumes)


def as_tensor(stored: np.ndarray, device: torch.device) -> torch.Tensor:
    """Stored integers as a torch tensor on `device`: uint8 as it is, uint16 as int32 (torch's uint16 has few ops)."""
    array = stored.astype(np.int32) if stored.dtype == np.uint16 else np.ascontiguousarray(stored)
    return torch.from_numpy(array).to(device)
