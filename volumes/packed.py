# SPDX-License-Identifier: Apache-2.0
"""The packed dataset format, and its one owner: what dataset_tool.py writes and every other tool reads.

A packed dataset is a .zip (stored, not compressed) or a folder holding

    dataset.json              the record: format, shape [C, D, H, W], volume_info (volumes.contract.VolumeInfo),
                              class labels, each volume's source name and grid (centre, direction)
    00000/vol00000000.npy     volume 0: [C, D, H, W] uint8 or uint16
    00000/seg00000000.npy     its label map [D, H, W] uint8 (datasets packed with --seg)
    00001/vol00001000.npy     ... 1000 volumes per folder

This module names the members, writes them (PackedWriter: under a temporary name, checked, renamed), says whether a
path is a packed dataset (is_packed) and reads one (PackedDataset: the record, volumes, label maps, case names,
grids, class labels). It needs NumPy only; training.dataset wraps the reader as the trainer's torch Dataset.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import zipfile
from typing import IO, Iterator

import numpy as np

import dnnlib
from volumes.contract import VolumeInfo

FORMAT = 'stylegan2-ada-3d/1'     # dataset.json's "format".
RECORD = 'dataset.json'
VOLUMES_PER_FOLDER = 1000
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # Fixed member timestamps: the same inputs give the same archive.

#----------------------------------------------------------------------------
# Member names.


def volume_member(index: int) -> str:
    """The member name of volume `index`: 00000/vol00000000.npy."""
    return f'{index // VOLUMES_PER_FOLDER:05d}/vol{index:08d}.npy'


def label_map_member(volume_name: str) -> str:
    """The label map that belongs to a volume member: 00000/vol00000003.npy -> 00000/seg00000003.npy."""
    folder, name = volume_name.rsplit('/', 1) if '/' in volume_name else ('', volume_name)
    return '/'.join(p for p in (folder, 'seg' + name[len('vol'):]) if p)


def is_volume_member(name: str) -> bool:
    """True for a volume's .npy member (not a label map, not the record)."""
    return name.endswith('.npy') and not os.path.basename(name).startswith('seg')


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of an uncompressed .npy file (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()

#----------------------------------------------------------------------------
# Is it one?


def is_packed(path: str) -> bool:
    """True when `path` is a packed dataset: a .zip or a folder whose root dataset.json names this format."""
    try:
        if os.path.isdir(path):
            with open(os.path.join(path, RECORD), 'rb') as f:
                record = json.load(f)
        else:
            with zipfile.ZipFile(path) as z:
                record = json.loads(z.read(RECORD))
        return isinstance(record, dict) and record.get('format') == FORMAT
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return False

#----------------------------------------------------------------------------
# Writing.


class WriteError(ValueError):
    """The destination cannot be used or written; the message names it."""


class PackedWriter:
    """Writes members to a temporary zip or folder beside `dest`; commit() checks it and renames it into place,
    abort() removes it. The temporary name is dnnlib's, so a later run removes what a killed run left."""

    def __init__(self, dest: str, overwrite: bool = False) -> None:
        self.dest = os.path.abspath(os.path.expanduser(dest))
        self.is_zip = self.dest.lower().endswith('.zip')
        self.members = 0
        self.tmp, self._zip = None, None
        self._check_dest(dest, overwrite)
        parent = os.path.dirname(self.dest)
        with self._dest_errors():
            os.makedirs(parent, exist_ok=True)
            dnnlib.util.remove_stale_temporaries(parent)
            self.tmp = dnnlib.util.temporary_path(self.dest)
            if self.is_zip:
                self._zip = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)
            else:
                os.mkdir(self.tmp)

    def _check_dest(self, dest: str, overwrite: bool) -> None:
        if self.is_zip and os.path.isdir(self.dest):
            raise WriteError(f'--dest {dest} is a folder; a .zip destination must be a file')
        if self.is_zip and os.path.exists(self.dest) and not overwrite:
            raise WriteError(f'--dest {dest} exists; pass --overwrite to replace it')
        if not self.is_zip and os.path.exists(self.dest):
            if not os.path.isdir(self.dest):
                raise WriteError(f'--dest {dest} exists and is not a folder (use a .zip name or an empty folder)')
            if os.listdir(self.dest) and not overwrite:
                raise WriteError(f'--dest {dest} is not empty; pass --overwrite to replace it')
        blocker = _existing_file_in_path(os.path.dirname(self.dest))
        if blocker:
            raise WriteError(f'--dest {dest}: {blocker} is a file, not a folder')

    @contextlib.contextmanager
    def _dest_errors(self) -> Iterator[None]:
        """Turn a filesystem error (no permission, a file in the path, disk full) into a WriteError naming dest."""
        try:
            yield
        except (OSError, zipfile.BadZipFile) as e:
            self.abort()
            raise WriteError(f'cannot write --dest {self.dest}: {dnnlib.util.describe_os_error(e)}') from None

    def add(self, name: str, data: bytes) -> None:
        """Store one member (a '/'-separated relative name)."""
        with self._dest_errors():
            if self.is_zip:
                self._zip.writestr(zipfile.ZipInfo(name, date_time=_ZIP_DATE), data, compress_type=zipfile.ZIP_STORED)
            else:
                path = os.path.join(self.tmp, *name.split('/'))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'wb') as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            self.members += 1

    def add_volume(self, index: int, volume: np.ndarray, label_map: np.ndarray | None = None) -> str:
        """Store volume `index` [C, D, H, W] (and its label map [D, H, W]); returns the volume's member name."""
        name = volume_member(index)
        self.add(name, npy_bytes(volume))
        if label_map is not None:
            self.add(label_map_member(name), npy_bytes(label_map))
        return name

    def add_record(self, record: dict) -> None:
        """Store dataset.json."""
        self.add(RECORD, json.dumps({'format': FORMAT, **record}).encode())

    def commit(self) -> None:
        """Check the finished output (every member read back, CRCs compared) and move it to dest."""
        with self._dest_errors():
            if self.is_zip:
                self._zip.close()
                with open(self.tmp, 'rb+') as f:
                    os.fsync(f.fileno())
                self._verify_zip()
            os.chmod(self.tmp, (0o666 if self.is_zip else 0o777) & ~_umask())
            old = None
            if not self.is_zip and os.path.isdir(self.dest) and os.listdir(self.dest):  # Only with overwrite.
                old = dnnlib.util.temporary_path(self.dest)
                os.replace(self.dest, old)
            os.replace(self.tmp, self.dest)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
            dnnlib.util.fsync_folder(os.path.dirname(self.dest))
            self.tmp = None

    def _verify_zip(self) -> None:
        with zipfile.ZipFile(self.tmp) as z:
            bad = z.testzip()
            count = len(z.namelist())
        if bad is not None or count != self.members:
            raise OSError(errno.EIO, f'the archive does not read back ({bad or f"{count} of {self.members} members"}); '
                          f'is the disk full?')

    def abort(self) -> None:
        """Remove the partial output."""
        if self.tmp is None:
            return
        if self.is_zip:
            with contextlib.suppress(Exception):
                self._zip.close()
            with contextlib.suppress(OSError):
                os.remove(self.tmp)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = None


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _existing_file_in_path(folder: str) -> str | None:
    """The first existing non-folder on the way down to folder, or None."""
    while folder and not os.path.exists(folder):
        folder = os.path.dirname(folder) if os.path.dirname(folder) != folder else ''
    return folder if folder and not os.path.isdir(folder) else None

#----------------------------------------------------------------------------
# Reading.


class PackedDataset:
    """A packed dataset opened for reading: its record, and its volumes and label maps by index (member order).

    Opening reads dataset.json and every volume's .npy header (shape and dtype), so a damaged or inconsistent
    dataset fails at once with a ValueError naming the path and the member, not hours into training. Voxels are
    read on demand. Safe to pickle into DataLoader workers: each process opens its own zip handle.
    """

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self._zipfile, self._zip_pid = None, None
        self._kind = _storage_kind(self.path)
        self.record = self._read_record()
        files = set(self._list_files())
        self._files = files
        self.file_names = sorted(f for f in files if is_volume_member(f))
        if not self.file_names:
            raise ValueError(f'{self.path} holds no .npy volumes')
        try:
            self.volume_info = VolumeInfo.from_dataset_json(self.record)
        except ValueError as e:
            raise ValueError(f'dataset {self.path}: dataset.json: {e}') from None
        self.dtype = np.dtype(self.volume_info.dtype)
        self.shape = self._check_headers()  # [C, D, H, W]
        self.close()  # Workers forked later start without a shared handle.

    # Storage.

    def _zip(self) -> zipfile.ZipFile:
        # One handle per process: a forked worker that used its parent's handle would share its file offset.
        if self._zipfile is None or self._zip_pid != os.getpid():
            try:
                self._zipfile = zipfile.ZipFile(self.path)
            except (zipfile.BadZipFile, EOFError) as e:
                raise ValueError(f'dataset {self.path} is not a readable zip archive ({e}); is it truncated? '
                                 f'Copy or pack it again') from None
            self._zip_pid = os.getpid()
        return self._zipfile

    def _list_files(self) -> list[str]:
        if self._kind == 'zip':
            return [n for n in self._zip().namelist() if not n.endswith('/')]
        files = []
        for root, _dirs, names in os.walk(self.path):
            files += [os.path.relpath(os.path.join(root, n), self.path).replace(os.sep, '/') for n in names]
        return files

    def _open(self, name: str) -> IO[bytes]:
        if self._kind == 'zip':
            return self._zip().open(name, 'r')
        return open(os.path.join(self.path, name), 'rb')

    def _read_record(self) -> dict:
        try:
            with self._open(RECORD) as f:
                record = json.load(f)
        except (KeyError, FileNotFoundError):
            raise ValueError(f'{self.path} has no dataset.json at its root; pack it with dataset_tool.py') from None
        except json.JSONDecodeError as e:
            raise ValueError(f'{self.path}: dataset.json is not valid JSON ({e})') from None
        if not isinstance(record, dict):
            raise ValueError(f'{self.path}: dataset.json is not a JSON object')
        fmt = record.get('format', FORMAT)
        if fmt != FORMAT:
            raise ValueError(f'{self.path}: dataset.json format "{fmt}" is not "{FORMAT}"')
        return record

    def _read_header(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) from a member's .npy header, without reading its voxels."""
        try:
            with self._open(name) as f:
                major, _ = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read(f)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f'dataset {self.path}: {name} is not a readable .npy volume ({e})') from None
        return tuple(int(s) for s in shape), np.dtype(dtype)

    def _check_headers(self) -> tuple[int, int, int, int]:
        first = None
        for name in self.file_names:
            shape, dtype = self._read_header(name)
            if dtype != self.dtype:
                raise ValueError(f'dataset {self.path}: {name} holds {dtype} voxels, dataset.json says {self.dtype}')
            if len(shape) != 4:
                raise ValueError(f'dataset {self.path}: {name} has shape {list(shape)}; expected [C, D, H, W]')
            if first is not None and shape != first:
                raise ValueError(f'dataset {self.path}: {name} has shape {list(shape)}, {self.file_names[0]} '
                                 f'{list(first)}; every volume must have one shape (pack with --size)')
            first = first or shape
        return first

    def _read_member(self, name: str, dtype: np.dtype) -> np.ndarray:
        try:
            with self._open(name) as f:
                data = f.read()
            array = np.load(io.BytesIO(data), allow_pickle=False)
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:  # Bad CRC-32, a cut member.
            raise ValueError(f'dataset {self.path}: {name} cannot be read ({dnnlib.util.one_line(e)}); the '
                             f'archive is damaged, copy or pack it again') from None
        if array.dtype != dtype:
            raise ValueError(f'{self.path}: {name} has dtype {array.dtype}, dataset.json says {dtype}')
        return array

    def check_label_maps(self) -> None:
        """Every volume has a uint8 label map on its grid; ValueError naming the first that does not."""
        if not self.has_label_maps:
            raise ValueError(f'dataset {self.path} holds no label maps; pack it with dataset_tool.py --seg')
        for name in self.file_names:
            seg = label_map_member(name)
            if seg not in self._files:
                raise ValueError(f'dataset {self.path}: {name} has no label map {seg}')
            shape, dtype = self._read_header(seg)
            if shape != self.shape[1:] or dtype != np.uint8:
                raise ValueError(f'dataset {self.path}: {seg} holds {dtype} {list(shape)}; expected uint8 '
                                 f'{list(self.shape[1:])}')

    def check_integrity(self) -> None:
        """Read every stored byte once (a zip's CRC-32s); ValueError naming the first damaged member."""
        if self._kind != 'zip':
            return
        try:
            bad = self._zip().testzip()
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            bad = f'? ({e})'
        if bad is not None:
            raise ValueError(f'dataset {self.path}: {bad} is damaged (its CRC-32 does not match); copy or pack the '
                             f'dataset again')

    def close(self) -> None:
        """Close this process's zip handle (a later read reopens it)."""
        if self._zipfile is not None and self._zip_pid == os.getpid():
            self._zipfile.close()
        self._zipfile = None

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _zipfile=None, _zip_pid=None)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # Interpreter shutdown may have torn down zipfile already.
            self.close()

    # Volumes.

    def __len__(self) -> int:
        return len(self.file_names)

    def volume(self, index: int) -> np.ndarray:
        """Volume `index` [C, D, H, W] in the stored dtype."""
        volume = self._read_member(self.file_names[index], self.dtype)
        if tuple(volume.shape) != self.shape:
            raise ValueError(f'{self.path}: {self.file_names[index]} has shape {volume.shape}; the dataset holds '
                             f'{self.shape}')
        return volume

    def label_map(self, index: int) -> np.ndarray:
        """The label map of volume `index` [D, H, W] uint8 (datasets packed with --seg)."""
        if not self.has_label_maps:
            raise ValueError(f'dataset {self.path} holds no label maps; pack it with dataset_tool.py --seg')
        return self._read_member(label_map_member(self.file_names[index]), np.dtype(np.uint8))

    # The record.

    @property
    def has_label_maps(self) -> bool:
        """True when a label map is stored beside each volume (packed with --seg)."""
        return self.volume_info.label_names is not None

    @property
    def num_channels(self) -> int:
        return self.shape[0]

    @property
    def img_shape(self) -> tuple[int, int, int]:
        """(D, H, W)."""
        return tuple(self.shape[1:])

    @property
    def channels_are_sequences(self) -> bool:
        """True when the channels are separate MR sequences (not colour components)."""
        return bool(self.record.get('channels_are_sequences', False))

    @property
    def case_names(self) -> list[str]:
        """The source name of each volume, as dataset.json records it; the member name where it records none."""
        recorded = {str(entry[0]): str(entry[1]) for entry in self.record.get('sources') or []}
        return [recorded.get(name, name) for name in self.file_names]

    def case_geometry(self, index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(centre, direction) of volume `index` in world space as dataset.json records them; the record's
        where it records none per volume."""
        recorded = {str(entry[0]): entry[1:] for entry in self.record.get('grids') or []}
        centre, direction = recorded.get(self.file_names[index], (self.volume_info.centre, self.volume_info.direction))
        return tuple(float(c) for c in centre), tuple(float(d) for d in direction)

    def class_labels(self) -> np.ndarray | None:
        """The class labels in member order: int64 [N] class indices or float32 [N, L] vectors; None when the
        dataset has none."""
        entries = self.record.get('labels')
        if entries is None:
            return None
        by_name = {str(name).replace('\\', '/'): label for name, label in entries}
        missing = [f for f in self.file_names if f not in by_name]
        if missing:
            raise ValueError(f'{self.path}: dataset.json has no label for {missing[0]} ({len(missing)} missing)')
        labels = np.array([by_name[f] for f in self.file_names])
        if labels.ndim == 1:
            if not np.all(np.equal(np.mod(labels, 1), 0)) or labels.min() < 0:
                raise ValueError(f'{self.path}: class labels must be non-negative integers')
            return labels.astype(np.int64)
        if labels.ndim == 2:
            return labels.astype(np.float32)
        raise ValueError(f'{self.path}: labels must be class indices or float vectors, got shape {labels.shape}')


def _storage_kind(path: str) -> str:
    if os.path.isdir(path):
        return 'dir'
    if os.path.isfile(path) and path.lower().endswith('.zip'):
        return 'zip'
    if not os.path.exists(path):
        raise FileNotFoundError(f'dataset {path} does not exist')
    raise ValueError(f'dataset {path} must be a .zip or a folder made by dataset_tool.py')
