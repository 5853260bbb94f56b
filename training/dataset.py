# SPDX-License-Identifier: Apache-2.0
"""The training dataset: a packed dataset (volumes/packed.py) as a torch Dataset.

What the trainer adds to the packed reader, as the official 2D dataset does: a random subset (max_size), mirrored
copies along W (xflip), class labels as one-hot vectors, and the label map as a last channel (load_seg). Volumes
are returned in their stored dtype; the training loop maps them to [-1, 1] with volumes.contract.to_unit.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch

import dnnlib
from volumes.contract import VolumeInfo
from volumes.packed import PackedDataset


class VolumeFolderDataset(torch.utils.data.Dataset):
    """Volumes from a dataset zip or folder made by dataset_tool.py.

    Args:
        path: A .zip or a folder with dataset.json and .npy volumes at its root (volumes may be in subfolders).
        img_shape: Expected (D, H, W); None: whatever the dataset holds. A mismatch raises ValueError.
        max_size: Use a random subset of at most this many volumes (seeded, kept in index order); None: all.
        use_labels: Return the class labels from dataset.json; False: labels of shape [0].
        xflip: Double the dataset with copies mirrored along W.
        random_seed: Seed of the max_size subset.
        load_seg: Append the label map as a last channel (datasets packed with --seg); None: when the dataset has
            label maps.
    """

    def __init__(self,
                 path: str,                                      # Dataset zip or folder.
                 img_shape: tuple[int, int, int] | None = None,  # Expected (D, H, W); None = any.
                 max_size: int | None = None,                    # Random subset size; None = all volumes.
                 use_labels: bool = False,                       # Return labels (else shape [0]).
                 xflip: bool = False,                            # Add W-mirrored copies (doubles the length).
                 random_seed: int = 0,                           # Seed of the max_size subset.
                 load_seg: bool | None = False,                  # Append the label map as a last channel.
                 ) -> None:
        self._packed = PackedDataset(path)
        self._load_seg = self._packed.has_label_maps if load_seg is None else bool(load_seg)
        if self._load_seg:
            self._packed.check_label_maps()
            self._packed.close()
        if img_shape is not None and tuple(int(s) for s in img_shape) != self._packed.img_shape:
            raise ValueError(f'dataset {path} holds volumes of shape (D, H, W) = {self._packed.img_shape}, '
                             f'not the requested {tuple(img_shape)}')
        self._use_labels = use_labels
        self._raw_labels = None

        # Subset and mirror bookkeeping, as the official 2D dataset.
        self._raw_idx = np.arange(len(self._packed), dtype=np.int64)
        if max_size is not None and self._raw_idx.size > max_size:
            np.random.RandomState(random_seed % (1 << 31)).shuffle(self._raw_idx)
            self._raw_idx = np.sort(self._raw_idx[:max_size])
        self._xflip = np.zeros(self._raw_idx.size, dtype=np.uint8)
        if xflip:
            self._raw_idx = np.tile(self._raw_idx, 2)
            self._xflip = np.concatenate([self._xflip, np.ones_like(self._xflip)])

    @property
    def packed(self) -> PackedDataset:
        """The packed dataset underneath (its record, volumes and label maps by member index)."""
        return self._packed

    def check_integrity(self) -> None:
        """Read every stored byte once (a zip's CRC-32s); raise ValueError naming the first damaged volume."""
        self._packed.check_integrity()

    def close(self) -> None:
        """Close this process's zip handle (a later read reopens it)."""
        self._packed.close()

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _raw_labels=None)  # Workers reload the labels; the reader drops its handle.

    # Labels.

    def _get_raw_labels(self) -> np.ndarray:
        if self._raw_labels is None:
            labels = self._packed.class_labels() if self._use_labels else None
            self._raw_labels = labels if labels is not None else np.zeros([len(self._packed), 0], dtype=np.float32)
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
        volume = self._packed.volume(raw_idx)
        if self._load_seg:
            labels = self._packed.label_map(raw_idx)  # [D, H, W] uint8
            volume = np.concatenate([volume, labels[None].astype(volume.dtype)])  # [C + 1, D, H, W]
        if self._xflip[idx]:
            volume = volume[..., ::-1]  # [C, D, H, W]: mirror W.
        return np.ascontiguousarray(volume), self.get_label(idx)

    # Properties.

    @property
    def name(self) -> str:
        """The dataset's file or folder name without extension."""
        return os.path.splitext(os.path.basename(os.path.normpath(self._packed.path)))[0]

    @property
    def image_shape(self) -> list[int]:
        """[C, D, H, W]."""
        return list(self._packed.shape)

    @property
    def num_channels(self) -> int:
        return self._packed.num_channels

    @property
    def img_shape(self) -> tuple[int, int, int]:
        """(D, H, W)."""
        return self._packed.img_shape

    @property
    def label_shape(self) -> list[int]:
        raw = self._get_raw_labels()
        return [int(raw.max()) + 1] if raw.dtype == np.int64 else list(raw.shape[1:])

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
        info = self._packed.volume_info
        return info if self._load_seg else dataclasses.replace(info, label_names=None)

    @property
    def has_label_maps(self) -> bool:
        """True when the dataset stores a label map beside each volume (packed with --seg)."""
        return self._packed.has_label_maps

    @property
    def load_seg(self) -> bool:
        return self._load_seg

    @property
    def dtype(self) -> np.dtype:
        return self._packed.dtype

    @property
    def max_value(self) -> int:
        """255 for uint8, 65535 for uint16 (volumes.contract.to_unit maps a volume to [-1, 1] with it)."""
        return self._packed.volume_info.max_value

    @property
    def channel_names(self) -> list[str]:
        names = list(self._packed.volume_info.channels)
        return names if len(names) == self.num_channels else [f'channel{i}' for i in range(self.num_channels)]

    @property
    def file_names(self) -> list[str]:
        """The packed .npy members in index order (without mirrored copies), e.g. 00000/vol00000003.npy."""
        return list(self._packed.file_names)

    @property
    def case_names(self) -> list[str]:
        """The source name of each packed volume (in index order, without mirrored copies)."""
        return self._packed.case_names

    def case_geometry(self, raw_idx: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(centre, direction) of packed volume raw_idx in world space."""
        return self._packed.case_geometry(raw_idx)

    @property
    def channels_are_sequences(self) -> bool:
        """True when the channels are separate MR sequences (not colour components)."""
        return self._packed.channels_are_sequences
