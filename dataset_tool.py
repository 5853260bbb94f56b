# SPDX-License-Identifier: Apache-2.0
"""Pack medical volumes into a training dataset for stylegan2-ada-3d.

Each volume goes through: read -> reorient (permute and flip its axes towards LPS: x to the patient's left, y
posterior, z superior) -> resample to --spacing -> centred crop/pad to --fov -> resize to --size -> clip to the
--clip percentiles -> scale to --dtype. The geometric steps are composed into one resampling with the --interp
interpolator (and Gaussian anti-aliasing when down-sampling), so every voxel is interpolated once. With --spacing
and --size but no --fov, the box is size x spacing.

Oblique scans: by default (--orient=source) a volume keeps its own axes after the permutation, so an oblique scan
stays tilted in the world, and dataset.json records its direction cosines and the world position of its centre;
generated volumes are written with them and overlay the real scans in a viewer. --orient=lps resamples each scan
physically onto the world's L, P, S axes instead (the same box, centre and spacing), so every volume is axis-aligned.

The output is a zip (or folder) of uncompressed .npy volumes [C, D, H, W] named 00000/vol00000000.npy, plus
dataset.json with the shape, the volume record (spacing, direction, centre, intensity mapping, channel names),
the class labels, and each volume's source and grid. It is written to a temporary name next to --dest, checked
and renamed at the end, so a failed or interrupted run leaves nothing.

Examples:

\b
  # 200 built-in phantoms at 64x64x16 (x, y, z):
  python dataset_tool.py --source=phantom:200 --dest=~/datasets/phantoms.zip --size=64x64x16
\b
  # NIfTI/NRRD/MHA/DICOM volumes found under a folder, at 0.5 x 0.5 x 3 mm in a 128 x 128 x 72 mm box:
  python dataset_tool.py --source=~/prostate --dest=~/datasets/prostate.zip \\
      --spacing=0.5,0.5,3 --fov=128,128,72 --size=256x256x24 --labels=~/prostate/labels.csv
\b
  # Three MR sequences per case as one 3-channel volume, aligned on the T2W grid:
  python dataset_tool.py --source=~/picai --dest=~/datasets/picai.zip --size=256x256x24 \\
      --channels='*_t2w.mha,*_adc.mha,*_hbv.mha'
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import io
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import zipfile
from typing import Iterator

import click
import numpy as np
import SimpleITK as sitk
import tqdm

import dnnlib
from volumes.contract import (DATASET_FORMAT, INTERPOLATIONS, ORIENTS, IntensityMapping, VolumeInfo, dhw_to_xyz,
                            format_size, parse_size, parse_xyz)
from volumes import packing, phantom, volume_io

DTYPES = ('uint8', 'uint16')
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # Fixed member timestamps: the same inputs give the same archive.


ON_ERROR = ('fail', 'skip', 'stop')


class PackError(ValueError):
    """A problem that stops packing (bad options, unusable sources, inputs that failed, a failed write)."""

#----------------------------------------------------------------------------
# Sources: cases to pack, each with one item per channel.


@dataclasses.dataclass
class Case:
    """One output volume: a name for reports, one source item per channel, and the names a label may use."""
    name: str                         # Relative path, DICOM folder, case id or 'phantom:SEED'.
    items: list[tuple[str, object]]   # ('file', path) | ('dicom', [slice files]) | ('phantom', seed).
    keys: tuple[str, ...]             # Label names that refer to this case.


def parse_phantom_source(source: str) -> tuple[int, int] | None:
    """'phantom:N' or 'phantom:N:SEED' -> (N, SEED); None for other sources."""
    if not source.startswith('phantom:'):
        return None
    match = re.fullmatch(r'phantom:(\d+)(?::(\d+))?', source)
    if not match or int(match.group(1)) < 1:
        raise PackError(f'--source "{source}": expected phantom:N or phantom:N:SEED with N >= 1')
    return int(match.group(1)), int(match.group(2) or 0)


def phantom_cases(count: int, seed: int) -> list[Case]:
    """Phantom volumes with seeds seed, seed + 1, ..."""
    return [Case(f'phantom:{s}', [('phantom', s)], (f'phantom:{s}', f'phantom{s}', str(s)))
            for s in range(seed, seed + count)]


def _file_keys(rel: str) -> tuple[str, ...]:
    base = os.path.basename(rel)
    return (rel, volume_io.strip_extension(rel), base, volume_io.strip_extension(base))


def _walk(root: str) -> Iterator[tuple[str, list[str]]]:
    """(folder, sorted file names) under root, sorted, skipping hidden entries and macOS zip debris."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith('.') and d != '__MACOSX')
        yield folder, sorted(n for n in names if not n.startswith('.'))


def folder_cases(root: str) -> tuple[list[Case], list[tuple[str, str]]]:
    """Single-volume cases under root: volume files and DICOM series (one case per series).

    Returns:
        (cases, problems): problems are (name, reason) for DICOM folders whose series cannot be listed.
    """
    cases, problems = [], []
    for folder, names in _walk(root):
        dicom = []
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, '/')
            if volume_io.volume_extension(name):
                cases.append(Case(rel, [('file', path)], _file_keys(rel)))
            elif volume_io.is_dicom_file(path):
                dicom.append(path)
        if dicom:
            rel = os.path.relpath(folder, root).replace(os.sep, '/')
            series = volume_io.find_dicom_series(folder)
            if not series:
                problems.append((rel, f'{len(dicom)} DICOM file(s) in {folder} (e.g. {os.path.basename(dicom[0])}) '
                                      f'hold no readable series'))
            for uid, files in series:
                name = rel if len(series) == 1 else f'{rel}#{uid}'
                cases.append(Case(name, [('dicom', files)], (name, rel, os.path.basename(folder), uid)))
    return sorted(cases, key=lambda c: c.name), problems


def _pattern_regex(pattern: str) -> re.Pattern:
    # The single '*' captures the case id; '?' matches one character as in a glob.
    head, tail = pattern.split('*')
    escape = lambda s: re.escape(s).replace(r'\?', '.')  # noqa: E731
    return re.compile(escape(head) + '(.+)' + escape(tail) + r'\Z', flags=re.IGNORECASE)


def channel_names(patterns: list[str]) -> list[str]:
    """Readable channel names from patterns: '*_t2w.nii.gz' -> 't2w'."""
    names = []
    for i, pattern in enumerate(patterns):
        stem = volume_io.strip_extension(os.path.basename(pattern)).replace('*', '')
        stem = stem.strip('_-. ') or f'channel{i}'
        names.append(stem if stem not in names else f'{stem}{i}')
    return names


def sequence_cases(root: str, patterns: list[str]) -> tuple[list[Case], list[tuple[str, str]]]:
    """Multi-sequence cases: files matching each pattern grouped by the part matched by '*'.

    A pattern with a '/' matches the path relative to root; otherwise the file name.

    Returns:
        (cases, problems): problems are (case id, reason) for cases missing a sequence or matching twice.
    """
    regexes = [_pattern_regex(p) for p in patterns]
    found: dict[str, list[list[str]]] = {}
    for folder, names in _walk(root):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, root).replace(os.sep, '/')
            for c, (pattern, regex) in enumerate(zip(patterns, regexes)):
                match = regex.match(rel if '/' in pattern else name)
                if match:
                    found.setdefault(match.group(1), [[] for _ in patterns])[c].append(rel)
    cases, problems = [], []
    for case_id in sorted(found):
        hits = found[case_id]
        missing = [patterns[c] for c, h in enumerate(hits) if not h]
        double = [patterns[c] for c, h in enumerate(hits) if len(h) > 1]
        if missing:
            problems.append((case_id, f'case "{case_id}" has no file for {", ".join(missing)}'))
        elif double:
            problems.append((case_id, f'case "{case_id}" has several files for {", ".join(double)}'))
        else:
            items = [('file', os.path.join(root, h[0])) for h in hits]
            cases.append(Case(case_id, items, (case_id, *_file_keys(hits[0][0]))))
    return cases, problems


@contextlib.contextmanager
def source_root(source: str) -> Iterator[str]:
    """The folder to search: the source folder itself, or a temporary extraction of a source zip."""
    if os.path.isdir(source):
        yield source
        return
    if not os.path.isfile(source):
        raise PackError(f'--source "{source}" does not exist (expected a folder, a .zip or phantom:N)')
    if not zipfile.is_zipfile(source):
        raise PackError(f'--source "{source}" is neither a folder nor a .zip archive')
    with tempfile.TemporaryDirectory(prefix='dataset-tool-') as tmp:
        try:
            with zipfile.ZipFile(source) as z:
                z.extractall(tmp)  # extractall drops absolute paths and '..' from member names.
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise PackError(f'cannot extract --source "{source}": {e}') from None
        yield tmp

#----------------------------------------------------------------------------
# Labels.


def _parse_number(text: str) -> int | float:
    value = float(text)
    return int(value) if re.fullmatch(r'\s*[+-]?\d+\s*', text) else value


def load_labels(path: str) -> dict[str, int | list[float]]:
    """Labels from a CSV (name,value[,value...], optional header) or JSON ({name: int or [floats]}).

    All labels must be non-negative class indices, or all float vectors of one length.
    """
    try:
        with open(path, newline='') as f:
            if path.lower().endswith('.json'):
                raw = json.load(f, object_pairs_hook=lambda pairs: _unique_names(pairs, path))
                if not isinstance(raw, dict):
                    raise PackError(f'--labels {path}: expected a JSON object {{name: label}}')
            elif path.lower().endswith('.csv'):
                raw = _read_label_csv(f, path)
            else:
                raise PackError(f'--labels {path}: expected a .csv or .json file')
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f'--labels {path}: {" ".join(str(e).split())}') from None
    if not raw:
        raise PackError(f'--labels {path} holds no labels')
    return _validate_labels(raw, path)


def _unique_names(pairs: list[tuple[str, object]], path: str) -> dict[str, object]:
    # json.load keeps the last of repeated keys silently; a label file naming a volume twice is a mistake.
    labels: dict[str, object] = {}
    for name, value in pairs:
        if name in labels:
            raise PackError(f'--labels {path}: "{name}" is listed twice')
        labels[name] = value
    return labels


def _read_label_csv(f, path: str) -> dict[str, object]:
    rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    labels = {}
    for i, row in enumerate(rows):
        name, values = row[0].strip(), [v.strip() for v in row[1:] if v.strip()]
        try:
            numbers = [_parse_number(v) for v in values]
        except ValueError:
            if i == 0:
                continue  # A header row.
            raise PackError(f'--labels {path}, row {i + 1}: labels must be numbers, got {values}') from None
        if not values:
            raise PackError(f'--labels {path}, row {i + 1}: "{name}" has no label')
        if name in labels:
            raise PackError(f'--labels {path}, row {i + 1}: "{name}" is listed twice')
        labels[name] = numbers[0] if len(numbers) == 1 and isinstance(numbers[0], int) else [float(v) for v in numbers]
    return labels


def _validate_labels(raw: dict, path: str) -> dict[str, int | list[float]]:
    is_class = lambda v: isinstance(v, int) and not isinstance(v, bool)  # noqa: E731
    values = list(raw.values())
    if all(is_class(v) for v in values):
        if min(values) < 0:
            raise PackError(f'--labels {path}: class labels must be >= 0')
        return {str(k): int(v) for k, v in raw.items()}
    vectors = [v if isinstance(v, list) else [v] for v in values]
    ok = all(isinstance(x, (int, float)) and not isinstance(x, bool) for v in vectors for x in v)
    if not ok or len({len(v) for v in vectors}) != 1 or not vectors[0]:
        raise PackError(f'--labels {path}: labels must all be class indices or all float vectors of one length')
    return {str(k): [float(x) for x in v] for k, v in zip(raw, vectors)}


def unmatched_labels(labels: dict, cases: list[Case]) -> list[str]:
    """Label names that refer to no case."""
    keys = {k for case in cases for k in case.keys}
    return sorted(name for name in labels if name not in keys)


def case_label(case: Case, labels: dict):
    """The label of case (first of its keys found in labels), or None."""
    return next((labels[k] for k in case.keys if k in labels), None)

#----------------------------------------------------------------------------
# One case: read, reorient, resample, clip, scale.


@dataclasses.dataclass(frozen=True)
class PackOptions:
    """Everything that decides how the cases are packed (the command line's options, parsed)."""
    grid: packing.GridOptions = packing.GridOptions()
    intensity: IntensityMapping = IntensityMapping()  # The --clip percentiles (or a window) and --dtype.
    labels: str | None = None                          # A CSV or JSON file of class labels.
    max_volumes: int | None = None
    on_error: str = 'fail'
    channels: list[str] | None = None                  # One glob per sequence.
    progress: bool = False


def read_item(item: tuple[str, object], grid: packing.GridOptions) -> sitk.Image:
    """Read one channel source as a checked 3D image in its file orientation."""
    kind, what = item
    if kind == 'file':
        return volume_io.read_image(what)
    if kind == 'dicom':
        return volume_io.read_dicom_series(what)
    # Phantoms are drawn at the requested size directly, which saves a resampling when only --size is given.
    array, spacing = phantom.make_phantom(int(what), grid.size or phantom.DEFAULT_SIZE_XYZ)
    return volume_io.array_to_image(array, spacing, volume_io.CANONICAL_DIRECTION)


def process_case(case: Case, options: PackOptions) -> packing.PackedCase:
    """The stored volume [C, D, H, W] of a case and its grid (volumes/packing.py: every channel on the first
    channel's grid, each mapped to stored integers on its own)."""
    images = [read_item(item, options.grid) for item in case.items]
    names = [str(item[1]) if item[0] == 'file' else case.name for item in case.items]
    return packing.pack_images(images, options.grid, options.intensity, names)

#----------------------------------------------------------------------------
# Output: a zip or a folder, written under a temporary name and renamed at the end.


class DatasetWriter:
    """Writes members to a temporary zip or folder beside dest; commit() checks it and renames it into place,
    abort() removes it. The temporary name is dnnlib's, so a later run removes what a killed run left."""

    def __init__(self, dest: str, overwrite: bool = False) -> None:
        self.dest = os.path.abspath(os.path.expanduser(dest))
        self.is_zip = self.dest.lower().endswith('.zip')
        self.overwrite = overwrite
        self.members = 0
        parent = os.path.dirname(self.dest)
        if self.is_zip and os.path.isdir(self.dest):
            raise PackError(f'--dest {dest} is a folder; a .zip destination must be a file')
        if self.is_zip and os.path.exists(self.dest) and not overwrite:
            raise PackError(f'--dest {dest} exists; pass --overwrite to replace it')
        if not self.is_zip and os.path.exists(self.dest):
            if not os.path.isdir(self.dest):
                raise PackError(f'--dest {dest} exists and is not a folder (use a .zip name or an empty folder)')
            if os.listdir(self.dest) and not overwrite:
                raise PackError(f'--dest {dest} is not empty; pass --overwrite to replace it')
        self.tmp, self._zip = None, None
        blocker = _existing_file_in_path(parent)
        if blocker:
            raise PackError(f'--dest {dest}: {blocker} is a file, not a folder')
        with self._dest_errors():
            os.makedirs(parent, exist_ok=True)
            dnnlib.util.remove_stale_temporaries(parent)
            self.tmp = dnnlib.util.temporary_path(self.dest)
            if self.is_zip:
                self._zip = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)
            else:
                os.mkdir(self.tmp)

    @contextlib.contextmanager
    def _dest_errors(self) -> Iterator[None]:
        """Turn a filesystem error (no permission, a file in the path, disk full) into a PackError naming dest."""
        try:
            yield
        except (OSError, zipfile.BadZipFile) as e:
            self.abort()
            raise PackError(f'cannot write --dest {self.dest}: {dnnlib.util.describe_os_error(e)}') from None

    def add(self, fname: str, data: bytes) -> None:
        """Store one member (a '/'-separated relative name)."""
        with self._dest_errors():
            if self.is_zip:
                info = zipfile.ZipInfo(fname, date_time=_ZIP_DATE)
                self._zip.writestr(info, data, compress_type=zipfile.ZIP_STORED)
            else:
                path = os.path.join(self.tmp, *fname.split('/'))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, 'wb') as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            self.members += 1

    def commit(self) -> None:
        """Check the finished output (every member read back, CRCs compared) and move it to dest."""
        with self._dest_errors():
            if self.is_zip:
                self._zip.close()
                with open(self.tmp, 'rb+') as f:
                    os.fsync(f.fileno())
                self._verify_zip()
            os.chmod(self.tmp, (0o777 if not self.is_zip else 0o666) & ~_umask())
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


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of an uncompressed .npy file."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def volume_fname(index: int) -> str:
    """The member name of volume index: 00000/vol00000000.npy, 1000 volumes per folder."""
    return f'{index // 1000:05d}/vol{index:08d}.npy'

#----------------------------------------------------------------------------
# The whole run.


@dataclasses.dataclass
class PackSummary:
    """What a run did."""
    dest: str
    written: int = 0
    shape: list[int] | None = None                                 # [C, D, H, W]
    skipped: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (name, reason)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def report(self) -> str:
        """A human-readable summary."""
        lines = [f'Wrote {self.written} volume{"s" * (self.written != 1)} of shape [C, D, H, W] = {self.shape} '
                 f'to {self.dest}; skipped {len(self.skipped)}.']
        lines += [f'  skipped {name}: {reason}' for name, reason in self.skipped]
        lines += [f'  warning: {w}' for w in self.warnings]
        return '\n'.join(lines)


class FailedInputs(PackError):
    """Some inputs could not be packed and skipping was not asked for; nothing was written."""

    def __init__(self, summary: PackSummary) -> None:
        self.summary = summary
        failed, total = len(summary.skipped), summary.written + len(summary.skipped)
        super().__init__(f'{failed} of {total} inputs could not be packed (listed above); nothing was written. '
                         f'Fix them, or pass --on-error=skip to pack the other {summary.written}.')

    def details(self) -> str:
        return '\n'.join(f'  failed {name}: {reason}' for name, reason in self.summary.skipped)


def _find_cases(source: str, root: str | None, channels: list[str] | None) -> tuple[list[Case], list]:
    ph = parse_phantom_source(source)
    if ph is not None:
        if channels:
            raise PackError('--channels does not apply to a phantom source')
        return phantom_cases(*ph), []
    cases, problems = sequence_cases(root, channels) if channels else folder_cases(root)
    if not cases and not problems:
        kinds = 'files matching --channels' if channels else 'volumes (NIfTI, NRRD, MHA/MHD, .npy or DICOM)'
        raise PackError(f'--source {source}: no {kinds} found')
    return cases, problems


def pack_dataset(source: str, dest: str, size: tuple[int, int, int] | None = None,
                 spacing: tuple[float, float, float] | None = None, fov: tuple[float, float, float] | None = None,
                 orient: str = 'source', interpolation: str = 'linear', clip: tuple[float, float] = (0.5, 99.5),
                 dtype: str = 'uint8', labels: str | None = None, max_volumes: int | None = None,
                 on_error: str = 'fail', channels: list[str] | None = None, progress: bool = False,
                 overwrite: bool = False) -> PackSummary:
    """Pack a source into a dataset zip or folder (see the module docstring for the steps).

    Args:
        source: A folder (searched recursively), a .zip of such files, or 'phantom:N[:SEED]'.
        dest: A .zip path, or an empty or non-existent folder.
        size: Output size (x, y, z); None: all volumes must already share a size.
        spacing: Resample to this spacing (x, y, z) mm; with size and no fov, the box is size * spacing.
        fov: Centred physical crop/pad (x, y, z) mm.
        orient: 'source' (keep each scan's axes, permuted and flipped towards LPS, and record their direction)
            or 'lps' (resample physically onto the world's axes).
        interpolation: Image interpolator: 'linear', 'bspline' or 'nearest'.
        clip: Lower and upper intensity percentiles, per volume and channel.
        dtype: 'uint8' or 'uint16'.
        labels: A CSV or JSON label file, or None.
        max_volumes: Stop after writing this many volumes.
        on_error: For a volume that cannot be packed: 'fail' (go on checking the others, then raise PackError
            naming every failed input and write nothing), 'skip' (leave it out and keep the archive of the others)
            or 'stop' (raise PackError at once).
        channels: Glob patterns with one '*' each, one per sequence; the '*' part is the case id.
        progress: Show a progress bar.
        overwrite: Replace an existing dest (else an existing .zip or a non-empty folder is an error).

    Returns:
        The summary. Raises PackError when nothing could be written, or as on_error says.
    """
    options = PackOptions(grid=packing.GridOptions(size, spacing, fov, orient, interpolation),
                          intensity=IntensityMapping('percentile', clip[0], clip[1], dtype), labels=labels,
                          max_volumes=max_volumes, on_error=on_error, channels=channels, progress=progress)
    ph = parse_phantom_source(source)
    writer = DatasetWriter(dest, overwrite=overwrite)
    try:
        with (contextlib.nullcontext(None) if ph else source_root(source)) as root:
            summary = _pack(source, root, writer, options)
        if summary.skipped and on_error == 'fail':
            raise FailedInputs(summary)
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return summary


def _pack(source: str, root: str | None, writer: DatasetWriter, options: PackOptions) -> PackSummary:
    summary = PackSummary(dest=writer.dest)
    cases, problems = _find_cases(source, root, options.channels)
    label_map = load_labels(options.labels) if options.labels else None

    def fail(name: str, reason: str) -> None:
        reason = reason.replace(root, source.rstrip('/\\')) if root and root != source else reason
        if options.on_error == 'stop':
            raise PackError(reason if name in reason else f'{name}: {reason}')
        summary.skipped.append((name, reason))

    if label_map is not None:
        _check_label_names(label_map, options.labels, cases, options.on_error, summary)
    for name, reason in problems:
        fail(name, reason)

    packed = []  # (file name, case name, class label, grid) of every volume written.
    for case in tqdm.tqdm(cases, desc='Packing', unit='vol', disable=None if options.progress else True):
        if options.max_volumes is not None and summary.written >= options.max_volumes:
            break
        label = case_label(case, label_map) if label_map is not None else None
        if label_map is not None and label is None:
            fail(case.name, f'no label for {case.name} in {options.labels}')
            continue
        try:
            result = process_case(case, options)
        except (ValueError, OSError, RuntimeError, MemoryError) as e:
            fail(case.name, volume_io.sitk_error_message(e) if isinstance(e, RuntimeError) else str(e))
            continue
        if summary.shape is not None and list(result.volume.shape) != summary.shape:
            fail(case.name, f'{case.name} has size {format_size(result.volume.shape)}, the first volume '
                 f'{format_size(summary.shape)}; pass --size to resize every volume (or --spacing with --size or '
                 f'--fov for a common box)')
            continue
        summary.shape = list(result.volume.shape)
        fname = volume_fname(summary.written)
        writer.add(fname, npy_bytes(result.volume))
        packed.append((fname, case.name, label, result.grid))
        summary.written += 1

    if summary.written == 0:
        raise PackError(f'no volumes were written from {source} ({len(summary.skipped)} skipped'
                        + (f', e.g. {summary.skipped[0][0]}: {summary.skipped[0][1]})' if summary.skipped else ')'))
    writer.add('dataset.json', json.dumps(_dataset_info(summary, packed, options)).encode())
    return summary


def _check_label_names(label_map: dict, labels_path: str, cases: list[Case], on_error: str,
                       summary: PackSummary) -> None:
    # A label for a volume that is not there is usually a typo or a wrong --source: stop or warn.
    unmatched = unmatched_labels(label_map, cases)
    if unmatched:
        message = f'--labels {labels_path} names {len(unmatched)} volume(s) not in the source, e.g. "{unmatched[0]}"'
        if on_error == 'stop':
            raise PackError(message)
        summary.warnings.append(message)


def _dataset_info(summary: PackSummary, packed: list, options: PackOptions) -> dict:
    """dataset.json: the shape, the volume record (volumes.contract.VolumeInfo) and, per volume, its source, class
    label and grid (centre and direction in world space)."""
    grids = [grid for *_, grid in packed]
    spacings = np.asarray([grid.spacing for grid in grids])
    median = np.median(spacings, axis=0)
    spread = np.max(np.abs(spacings / median - 1))
    if spread > 0.01:
        summary.warnings.append(f'voxel spacings differ by up to {spread:.0%} between volumes; dataset.json '
                                f'records the median {np.round(median, 4).tolist()} mm (use --spacing or --fov)')
    direction, centre = packing.representative_geometry(grids)
    names = channel_names(options.channels) if options.channels else ['image']
    info = VolumeInfo(spacing=tuple(round(float(s), 6) for s in median), direction=direction, centre=centre,
                      intensity=options.intensity, channels=names, orient=options.grid.orient,
                      interpolation=options.grid.interpolation)
    labels = [[fname, label] for fname, _, label, _ in packed]
    return {
        'format': DATASET_FORMAT,
        'shape': summary.shape,
        'volume_info': info.to_dict(),
        'channels_are_sequences': bool(options.channels) and len(options.channels) > 1,
        'labels': labels if all(label is not None for _, label in labels) else None,
        'sources': [[fname, name] for fname, name, _, _ in packed],
        'grids': [[fname, list(grid.centre), list(grid.direction)] for fname, _, _, grid in packed],
    }

#----------------------------------------------------------------------------
# Command line.


def _size_option(value: str | None) -> tuple[int, int, int] | None:
    """--size 'XxYxZ' -> (x, y, z); every axis at least 2 (a size of 1 would make a 2D image)."""
    if value is None:
        return None
    try:
        shape = parse_size(value)
    except ValueError:
        shape = (0, 0, 0)
    if min(shape) < 2:
        raise click.BadParameter(f'"{value}": expected XxYxZ integers >= 2, e.g. 256x256x24', param_hint='--size')
    return dhw_to_xyz(shape)


def _xyz_option(value: str | None, param: str) -> tuple[float, float, float] | None:
    """--spacing or --fov 'a,b,c' (or one number) -> (x, y, z) mm."""
    if value is None:
        return None
    try:
        return parse_xyz(value, param)
    except ValueError as e:
        raise click.BadParameter(str(e).replace(f'{param} ', ''), param_hint=param) from None


def check_geometry_options(size, spacing, fov) -> None:
    """--size, --spacing and --fov together must agree (spacing = fov / size): one of them would be ignored."""
    if size is None or spacing is None or fov is None:
        return
    implied = np.asarray(fov, dtype=np.float64) / np.asarray(size)
    if not np.allclose(implied, spacing, rtol=1e-3, atol=0):
        shown = ','.join(f'{v:g}' for v in np.round(implied, 4))
        raise click.BadParameter(f'{",".join(f"{v:g}" for v in spacing)} disagrees with --fov / --size = {shown} mm; '
                                 f'give two of the three (or a --spacing equal to --fov / --size)',
                                 param_hint='--spacing')


def _parse_clip(value: str) -> tuple[float, float]:
    try:
        lo, hi = (float(p) for p in value.split(','))
    except ValueError:
        lo, hi = -1.0, -1.0
    if not 0 <= lo < hi <= 100:
        raise click.BadParameter(f'"{value}": expected two percentiles lo,hi with 0 <= lo < hi <= 100',
                                 param_hint='--clip')
    return lo, hi


def _parse_channels(value: str | None) -> list[str] | None:
    if value is None:
        return None
    patterns = [p.strip() for p in value.split(',') if p.strip()]
    bad = [p for p in patterns if p.count('*') != 1]
    if not patterns or bad:
        raise click.BadParameter(f'each pattern needs exactly one "*" (the case id), got "{bad[0] if bad else value}"',
                                 param_hint='--channels')
    return patterns


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM (a scheduler's kill) into SystemExit, so the temporary output is removed as on Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Signal handlers can only be set from the main thread.
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@click.command(cls=dnnlib.cli.Command, help=__doc__)
@click.option('--source', required=True, metavar='PATH', help='Folder, .zip, or phantom:N[:SEED]')
@click.option('--dest', required=True, metavar='PATH', help='Output .zip, or an empty or new folder')
@click.option('--size', metavar='XxYxZ', help='Output size, e.g. 256x256x24 (W x H x D)')
@click.option('--spacing', metavar='MM', help='Resample to this spacing: sx,sy,sz or one number')
@click.option('--fov', metavar='MM', help='Centred physical crop/pad: fx,fy,fz or one number')
@click.option('--orient', type=click.Choice(ORIENTS), default='source', show_default=True,
              help='source: keep each scan\'s axes (permuted and flipped towards LPS) and record an oblique tilt; '
                   'lps: resample physically onto the world\'s L, P, S axes')
@click.option('--interp', 'interpolation', type=click.Choice(INTERPOLATIONS), default='linear', show_default=True,
              help='Image interpolator (SimpleITK): linear, bspline (cubic) or nearest')
@click.option('--clip', default='0.5,99.5', show_default=True, metavar='LO,HI', help='Intensity percentiles')
@click.option('--dtype', type=click.Choice(DTYPES), default='uint8', show_default=True, help='Stored type')
@click.option('--labels', type=click.Path(exists=True, dir_okay=False), help='Labels: CSV (name,label...) or JSON')
@click.option('--max-volumes', type=click.IntRange(min=1), metavar='INT', help='Stop after this many volumes')
@click.option('--on-error', type=click.Choice(ON_ERROR), default='fail', show_default=True,
              help='For inputs that cannot be packed: fail (name them all, write nothing), skip them, or stop '
                   'at the first')
@click.option('--overwrite', is_flag=True, help='Replace an existing --dest')
@click.option('--channels', metavar='GLOBS', help='One pattern per sequence, e.g. "*_t2w.nii.gz,*_adc.nii.gz"')
def main(source: str, dest: str, size: str | None, spacing: str | None, fov: str | None, orient: str,
         interpolation: str, clip: str, dtype: str, labels: str | None, max_volumes: int | None, on_error: str,
         overwrite: bool, channels: str | None) -> None:
    options = dict(size=_size_option(size), spacing=_xyz_option(spacing, '--spacing'), fov=_xyz_option(fov, '--fov'),
                   orient=orient, interpolation=interpolation, clip=_parse_clip(clip),
                   channels=_parse_channels(channels))
    check_geometry_options(options['size'], options['spacing'], options['fov'])
    try:
        with _exit_on_sigterm():
            summary = pack_dataset(source=os.path.expanduser(source), dest=dest, dtype=dtype, labels=labels,
                                   max_volumes=max_volumes, on_error=on_error, progress=True, overwrite=overwrite,
                                   **options)
    except FailedInputs as e:
        click.echo(e.details())
        raise click.ClickException(str(e)) from None
    except PackError as e:
        raise click.ClickException(str(e)) from None
    click.echo(summary.report())


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
