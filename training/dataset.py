# SPDX-License-Identifier: Apache-2.0
"""The training dataset: volumes packed by dataset_tool.py, read lazily from a zip or a folder.

A packed dataset holds uncompressed .npy volumes [C, D, H, W] (uint8 or uint16) and a dataset.json at its root
with the shape, the volume record (volumes.contract.VolumeInfo: spacing, direction, centre, intensity mapping,
channel names) and the labels. This module is the only reader of dataset.json. Volumes are returned in their stored
dtype; the training loop maps them to [-1, 1] with volumes.contract.to_unit.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile

import numpy as np
import torch

import dnnlib
from volumes.contract import DATASET_FORMAT, VolumeInfo


#----------------------------------------------------------------------------


class VolumeFolderDataset(torch.utils.data.Dataset):
    """Volumes from a dataset zip or folder made by dataset_tool.py.

    Args:
        path: A .zip or a folder with dataset.json and .npy volumes at its root (volumes may be in subfolders).
        img_shape: Expected (D, H, W); None: whatever the dataset holds. A mismatch raises ValueError.
        max_size: Use a random subset of at most this many volumes (seeded, kept in index order); None: all.
        use_labels: Return the labels from dataset.json; False: labels of shape [0].
        xflip: Double the dataset with copies mirrored along W.
        random_seed: Seed of the max_size subset.
    """

    def __init__(self,
                 path: str,                                      # Dataset zip or folder.
                 img_shape: tuple[int, int, int] | None = None,  # Expected (D, H, W); None = any.
                 max_size: int | None = None,                    # Random subset size; None = all volumes.
                 use_labels: bool = False,                       # Return labels (else shape [0]).
                 xflip: bool = False,                            # Add W-mirrored copies (doubles the length).
                 random_seed: int = 0,                           # Seed of the max_size subset.
                 load_seg: bool = False,                         # Append the label map as a last channel.
                 ) -> None:
        self._path = str(path)
        self._zipfile = None
        self._zip_pid = None
        self._type = self._detect_type(self._path)
        self._name = os.path.splitext(os.path.basename(os.path.normpath(self._path)))[0]
        self._info = self._read_info()
        files = set(self._all_files())
        self._fnames = sorted(f for f in files if f.endswith('.npy') and not _is_label_map(f))
        if not self._fnames:
            raise ValueError(f'{self._path} holds no .npy volumes')
        try:
            self._volume_info = VolumeInfo.from_dataset_json(self._info)
        except ValueError as e:
            raise ValueError(f'dataset {self._path}: dataset.json: {e}') from None
        self._dtype = np.dtype(self._volume_info.dtype)
        self._image_shape = self._check_headers()
        self._load_seg = bool(load_seg)
        if self._load_seg:
            self._check_label_maps(files)
        if img_shape is not None and tuple(int(s) for s in img_shape) != self._image_shape[1:]:
            raise ValueError(f'dataset {self._path} holds volumes of shape (D, H, W) = {self._image_shape[1:]}, '
                             f'not the requested {tuple(img_shape)}')
        self.close()  # Workers forked later start without a shared handle.
        self._use_labels = use_labels
        self._raw_labels = None
        self._label_shape = None

        # Subset and mirror bookkeeping, as the official 2D dataset.
        self._raw_idx = np.arange(len(self._fnames), dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed % (1 << 31)).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    # Storage access.

    @staticmethod
    def _detect_type(path: str) -> str:
        if os.path.isdir(path):
            return 'dir'
        if os.path.isfile(path) and path.lower().endswith('.zip'):
            return 'zip'
        if not os.path.exists(path):
            raise FileNotFoundError(f'dataset {path} does not exist')
        raise ValueError(f'dataset {path} must be a .zip or a folder made by dataset_tool.py')

    def _get_zipfile(self) -> zipfile.ZipFile:
        # One handle per process. A forked DataLoader worker inherits the parent's handle, whose file offset it
        # would share (reads would interleave and corrupt each other), so a new pid opens its own.
        if self._zipfile is None or self._zip_pid != os.getpid():
            try:
                self._zipfile = zipfile.ZipFile(self._path)
            except (zipfile.BadZipFile, EOFError) as e:
                raise ValueError(f'dataset {self._path} is not a readable zip archive ({e}); is it truncated? '
                                 f'Copy or pack it again') from None
            self._zip_pid = os.getpid()
        return self._zipfile

    def _all_files(self) -> list[str]:
        if self._type == 'zip':
            return [n for n in self._get_zipfile().namelist() if not n.endswith('/')]
        files = []
        for root, _dirs, names in os.walk(self._path):
            files += [os.path.relpath(os.path.join(root, n), self._path).replace(os.sep, '/') for n in names]
        return files

    def _open_file(self, fname: str):
        if self._type == 'zip':
            return self._get_zipfile().open(fname, 'r')
        return open(os.path.join(self._path, fname), 'rb')

    def _read_info(self) -> dict:
        try:
            with self._open_file('dataset.json') as f:
                info = json.load(f)
        except (KeyError, FileNotFoundError):
            raise ValueError(f'{self._path} has no dataset.json at its root; pack it with dataset_tool.py') from None
        except json.JSONDecodeError as e:
            raise ValueError(f'{self._path}: dataset.json is not valid JSON ({e})') from None
        fmt = info.get('format', DATASET_FORMAT)
        if fmt != DATASET_FORMAT:
            raise ValueError(f'{self._path}: dataset.json format "{fmt}" is not "{DATASET_FORMAT}"')
        return info

    def _load_raw_volume(self, raw_idx: int, label_map: bool = False) -> np.ndarray:
        fname = _label_map_name(self._fnames[raw_idx]) if label_map else self._fnames[raw_idx]
        try:
            with self._open_file(fname) as f:
                data = f.read()
            volume = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # Bad CRC-32, a cut member, a bad header.
            raise ValueError(f'dataset {self._path}: {fname} cannot be read ({" ".join(str(e).split())}); the '
                             f'archive is damaged, copy or pack it again') from None
        if volume.dtype != (np.uint8 if label_map else self._dtype):
            raise ValueError(f'{self._path}: {fname} has dtype {volume.dtype}, dataset.json says {self._dtype}')
        return volume

    def _read_header(self, fname: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) from a member's .npy header, without reading its voxels."""
        try:
            with self._open_file(fname) as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f'dataset {self._path}: {fname} is not a readable .npy volume ({e})') from None
        return tuple(int(s) for s in shape), np.dtype(dtype)

    def _check_headers(self) -> tuple[int, int, int, int]:
        """Every volume's shape [C, D, H, W] and dtype, from the headers: one odd volume fails here, at the start,
        not hours into training."""
        first_shape = None
        for fname in self._fnames:
            shape, dtype = self._read_header(fname)
            if dtype != self._dtype:
                raise ValueError(f'dataset {self._path}: {fname} holds {dtype} voxels, dataset.json says {self._dtype}')
            if len(shape) != 4:
                raise ValueError(f'dataset {self._path}: {fname} has shape {list(shape)}; expected [C, D, H, W]')
            if first_shape is not None and shape != first_shape:
                raise ValueError(f'dataset {self._path}: {fname} has shape {list(shape)}, {self._fnames[0]} '
                                 f'{list(first_shape)}; every volume must have one shape (pack with --size)')
            first_shape = first_shape or shape
        return first_shape

    def _check_label_maps(self, files: set[str]) -> None:
        if self._volume_info.label_names is None:
            raise ValueError(f'dataset {self._path} holds no label maps; pack it with dataset_tool.py --seg')
        for fname in self._fnames:
            seg = _label_map_name(fname)
            if seg not in files:
                raise ValueError(f'dataset {self._path}: {fname} has no label map {seg}')
            shape, dtype = self._read_header(seg)
            if shape != self._image_shape[1:] or dtype != np.uint8:
                raise ValueError(f'dataset {self._path}: {seg} holds {dtype} {list(shape)}; expected uint8 '
                                 f'{list(self._image_shape[1:])}')

    def check_integrity(self) -> None:
        """Read every stored byte once (a zip's CRC-32s); raise ValueError naming the first damaged volume."""
        if self._type != 'zip':
            return
        try:
            bad = self._get_zipfile().testzip()
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            bad = f'? ({e})'
        if bad is not None:
            raise ValueError(f'dataset {self._path}: {bad} is damaged (its CRC-32 does not match); copy or pack the '
                             f'dataset again')

    def close(self) -> None:
        """Close this process's zip handle (a later read reopens it)."""
        if self._zipfile is not None and self._zip_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self) -> dict:
        # Workers get a copy without the open handle and the label cache.
        return dict(self.__dict__, _zipfile=None, _raw_labels=None)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # Interpreter shutdown may have torn down zipfile already.
            pass

    # Labels.

    def _load_raw_labels(self) -> np.ndarray:
        n = len(self._fnames)
        entries = self._info.get('labels')
        if not self._use_labels or entries is None:
            return np.zeros([n, 0], dtype=np.float32)
        by_name = {str(name).replace('\\', '/'): label for name, label in entries}
        missing = [f for f in self._fnames if f not in by_name]
        if missing:
            raise ValueError(f'{self._path}: dataset.json has no label for {missing[0]} ({len(missing)} missing)')
        labels = np.array([by_name[f] for f in self._fnames])
        if labels.ndim == 1:
            if not np.all(np.equal(np.mod(labels, 1), 0)) or labels.min() < 0:
                raise ValueError(f'{self._path}: class labels must be non-negative integers')
            return labels.astype(np.int64)
        if labels.ndim == 2:
            return labels.astype(np.float32)
        raise ValueError(f'{self._path}: labels must be class indices or float vectors, got shape {labels.shape}')

    def _get_raw_labels(self) -> np.ndarray:
        if self._raw_labels is None:
            self._raw_labels = self._load_raw_labels()
        return self._raw_labels

    def get_label(self, idx: int) -> np.ndarray:
        """The label of item idx as float32: one-hot for class labels, the vector itself otherwise."""
        label = self._get_raw_labels()[self._raw_idx[idx]]
        if label.dtype == np.int64:
            onehot = np.zeros(self.label_shape, dtype=np.float32)
            onehot[label] = 1
            return onehot
        return label.copy()

    def get_details(self, idx: int) -> dnnlib.EasyDict:
        """raw_idx (index into the packed volumes), xflip (bool) and raw_label (as stored) of item idx."""
        raw_idx = int(self._raw_idx[idx])
        return dnnlib.EasyDict(raw_idx=raw_idx, xflip=bool(self._xflip[idx]),
                               raw_label=self._get_raw_labels()[raw_idx].copy())

    # Items.

    def __len__(self) -> int:
        return int(self._raw_idx.size)

    def __getitem__(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """(volume [C, D, H, W] in the stored dtype, label); with load_seg, the label map is channel C."""
        raw_idx = int(self._raw_idx[idx])
        volume = self._load_raw_volume(raw_idx)
        if tuple(volume.shape) != self._image_shape:
            raise ValueError(f'{self._path}: {self._fnames[raw_idx]} has shape {volume.shape}; '
                             f'the dataset holds {self._image_shape}')
        if self._load_seg:
            labels = self._load_raw_volume(raw_idx, label_map=True)  # [D, H, W] uint8
            volume = np.concatenate([volume, labels[None].astype(volume.dtype)])  # [C + 1, D, H, W]
        if self._xflip[idx]:
            volume = volume[..., ::-1]  # [C, D, H, W]: mirror W.
        return np.ascontiguousarray(volume), self.get_label(idx)

    # Properties.

    @property
    def name(self) -> str:
        return self._name

    @property
    def image_shape(self) -> list[int]:
        """[C, D, H, W]."""
        return list(self._image_shape)

    @property
    def num_channels(self) -> int:
        return self._image_shape[0]

    @property
    def img_shape(self) -> tuple[int, int, int]:
        """(D, H, W)."""
        return tuple(self._image_shape[1:])

    @property
    def label_shape(self) -> list[int]:
        if self._label_shape is None:
            raw = self._get_raw_labels()
            self._label_shape = [int(raw.max()) + 1] if raw.dtype == np.int64 else list(raw.shape[1:])
        return list(self._label_shape)

    @property
    def label_dim(self) -> int:
        return int(np.prod(self.label_shape))

    @property
    def has_labels(self) -> bool:
        return any(x != 0 for x in self.label_shape)

    @property
    def has_onehot_labels(self) -> bool:
        return self._get_raw_labels().dtype == np.int64

    @property
    def volume_info(self) -> VolumeInfo:
        """The record of the volumes this dataset returns (spacing, direction, centre, intensity mapping, channel
        names; the label names only with load_seg); the training loop hands it to the generator, which keeps it in
        every snapshot."""
        return self._volume_info if self._load_seg else dataclasses.replace(self._volume_info, label_names=None)

    @property
    def has_label_maps(self) -> bool:
        """True when the dataset stores a label map beside each volume (packed with --seg)."""
        return self._volume_info.label_names is not None

    @property
    def load_seg(self) -> bool:
        return self._load_seg

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def max_value(self) -> int:
        """255 for uint8, 65535 for uint16 (volumes.contract.to_unit maps a volume to [-1, 1] with it)."""
        return self._volume_info.max_value

    @property
    def channel_names(self) -> list[str]:
        names = list(self._volume_info.channels)
        return names if len(names) == self.num_channels else [f'channel{i}' for i in range(self.num_channels)]

    @property
    def file_names(self) -> list[str]:
        """The packed .npy members in index order (without mirrored copies), e.g. 00000/vol00000003.npy."""
        return list(self._fnames)

    @property
    def case_names(self) -> list[str]:
        """The source name of each packed volume (in index order, without mirrored copies), as dataset.json
        records it; the member name when it records none."""
        recorded = {str(entry[0]): str(entry[1]) for entry in self._info.get('sources') or []}
        return [recorded.get(fname, fname) for fname in self._fnames]

    def case_geometry(self, raw_idx: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(centre, direction) of packed volume raw_idx in world space, as dataset.json records them; the
        record's when it records none per volume."""
        recorded = {str(entry[0]): entry[1:] for entry in self._info.get('grids') or []}
        centre, direction = recorded.get(self._fnames[raw_idx], (self._volume_info.centre, self._volume_info.direction))
        return tuple(float(c) for c in centre), tuple(float(d) for d in direction)

    @property
    def channels_are_sequences(self) -> bool:
        """True when the channels are separate MR sequences (not colour components)."""
        return bool(self._info.get('channels_are_sequences', False))


def _is_label_map(fname: str) -> bool:
    return os.path.basename(fname).startswith('seg')


def _label_map_name(fname: str) -> str:
    """00000/vol00000003.npy -> 00000/seg00000003.npy."""
    folder, name = os.path.split(fname)
    return '/'.join(p for p in (folder, 'seg' + name[len('vol'):]) if p)
