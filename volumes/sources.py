# SPDX-License-Identifier: Apache-2.0
"""What dataset_tool.py packs: the cases of a source (files, DICOM series, multi-sequence groups, phantoms) with
their label maps, and the class labels of a CSV or JSON file.

A case is one output volume: one source item per channel (MR sequence) and, with --seg, its label map. Patterns
(--channels, --seg) hold one '*' that stands for the case id; '?' matches one character. A pattern with a '/' is
matched against the path relative to the source folder, otherwise against the file name.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import re
import tempfile
import zipfile
from typing import Iterator

import dnnlib
from volumes import volume_io

#----------------------------------------------------------------------------
# Sources: cases to pack, each with one item per channel.


class PackError(ValueError):
    """A problem that stops packing (bad options, unusable sources, inputs that failed, a failed write)."""

@dataclasses.dataclass
class Case:
    """One output volume: a name for reports, one source item per channel, the names a class label may use, and
    its label map."""
    name: str                         # Relative path, DICOM folder, case id or 'phantom:SEED'.
    items: list[tuple[str, object]]   # ('file', path) | ('dicom', [slice files]) | ('phantom', seed).
    keys: tuple[str, ...]             # Label names that refer to this case.
    seg: tuple[str, object] | None = None  # ('file', path) | ('phantom', seed): the label map (--seg).
    case_id: str | None = None  # What '*' in --seg stands for: the id --channels matched (else the file's stem).


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


def is_single_file_source(source: str) -> bool:
    """A --source that is one volume file (NIfTI, NRRD, MetaImage, .npy) or one DICOM file, not a folder or .zip."""
    return os.path.isfile(source) and (volume_io.volume_extension(source) is not None or
                                       (not zipfile.is_zipfile(source) and volume_io.is_dicom_file(source)))


def single_file_cases(path: str) -> list[Case]:
    """One file as a one-volume source. A DICOM file stands for the series it belongs to (the slices in its folder
    that share its SeriesInstanceUID): one slice is no volume, and a multi-frame file is a series of one file."""
    name = os.path.basename(path)
    if volume_io.volume_extension(path) is not None:
        return [Case(name, [('file', path)], _file_keys(name))]
    folder = os.path.dirname(os.path.abspath(path))
    try:
        uid, files, count = volume_io.series_of_file(path)
    except ValueError as e:
        raise PackError(f'--source {e}') from None
    case = os.path.basename(folder) if count == 1 else f'{os.path.basename(folder)}#{uid}'
    return [Case(case, [('dicom', files)], (case, os.path.basename(folder), uid, name))]


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
            cases.append(Case(case_id, items, (case_id, *_file_keys(hits[0][0])), case_id=case_id))
    return cases, problems


def attach_label_maps(cases: list[Case], root: str | None, pattern: str) -> tuple[list[Case], list[tuple[str, str]]]:
    """Give each case its label map: the file `pattern` names with '*' replaced by the case's id (the id --channels
    matched, with one pattern or several; else a file's stem or a DICOM folder's name), beside the case's (first)
    file, or relative to root when the pattern holds a '/'. Files that match the pattern are label maps, not cases.
    'phantom' gives phantoms their organ mask.

    Returns:
        (cases, problems): problems are (case name, reason) for cases whose label map is missing.
    """
    if pattern == 'phantom':
        if any(case.items[0][0] != 'phantom' for case in cases):
            raise PackError('--seg=phantom is for a phantom:N source; give a pattern such as "*_seg.nii.gz"')
        return [dataclasses.replace(case, seg=('phantom', case.items[0][1])) for case in cases], []
    if pattern.count('*') != 1:
        raise PackError(f'--seg "{pattern}": expected one "*" standing for the case id (or "phantom")')
    regex = _pattern_regex(pattern)
    kept, problems = [], []
    for case in cases:
        first = case.items[0][1]
        path = first if case.items[0][0] == 'file' else os.path.dirname(first[0])  # A file, or a DICOM folder.
        rel = os.path.relpath(path, root).replace(os.sep, '/')
        if case.items[0][0] == 'file' and regex.match(rel if '/' in pattern else os.path.basename(path)):
            continue  # A label map itself.
        seg = _label_map_path(root, path, case, pattern)
        if os.path.isfile(seg):
            kept.append(dataclasses.replace(case, seg=('file', seg)))
        else:
            problems.append((case.name, f'no label map for {case.name}: {seg} does not exist (--seg {pattern})'))
    return kept, problems


def _label_map_path(root: str, path: str, case: Case, pattern: str) -> str:
    if case.case_id is not None:  # A --channels group, even of one pattern: case_0007 for case_0007_t2w.nii.gz.
        stem = case.case_id
    elif case.items[0][0] == 'file':
        stem = volume_io.strip_extension(os.path.basename(path))
    else:
        stem = os.path.basename(path.rstrip('/'))
    folder = root if '/' in pattern else os.path.dirname(path.rstrip('/'))
    return os.path.join(folder, *pattern.replace('*', stem).split('/'))


def load_label_names(path: str) -> dict[int, str]:
    """Names of the label values from a JSON file {"1": "CZ+TZ", "2": "PZ"} (keys are positive integers)."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PackError(f'--seg-names {path}: {dnnlib.util.one_line(e)}') from None
    if not isinstance(raw, dict) or not raw:
        raise PackError(f'--seg-names {path}: expected a JSON object {{"1": "name", ...}}')
    names = {}
    for key, name in raw.items():
        if not re.fullmatch(r'\d+', str(key)) or int(key) == 0 or not isinstance(name, str) or not name.strip():
            raise PackError(f'--seg-names {path}: "{key}": "{name}" is not a positive label value with a name '
                            f'(0 is the background)')
        names[int(key)] = name.strip()
    return names


@contextlib.contextmanager
def source_root(source: str) -> Iterator[str]:
    """The folder to search: the source folder itself, a temporary extraction of a source zip, or the folder of a
    single file (where its label map lies)."""
    if os.path.isdir(source):
        yield source
        return
    if not os.path.isfile(source):
        raise PackError(f'--source "{source}" does not exist (expected a folder, a .zip, a volume file or '
                        f'phantom:N)')
    if is_single_file_source(source):
        yield os.path.dirname(os.path.abspath(source))
        return
    if not zipfile.is_zipfile(source):
        raise PackError(f'--source "{source}" is neither a folder, a .zip archive nor a volume file (expected one of '
                        f'{", ".join(volume_io.READ_EXTENSIONS)} or DICOM)')
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
        raise PackError(f'--labels {path}: {dnnlib.util.one_line(e)}') from None
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
