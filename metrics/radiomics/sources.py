# SPDX-License-Identifier: Apache-2.0
"""Where radiomics.py finds volumes and their masks: a folder of volume files, or a dataset zip.

In a folder (searched recursively), the mask of `NAME.<ext>` is `NAME_seg.<ext>` beside it, the naming generate.py
uses for jointly generated label maps. A mask pattern with one `*` standing for the volume's name overrides this:
`*_mask.nii.gz` (beside the volume) or `labels/*.nii.gz` (relative to the folder). Files that are masks are never
taken as volumes. A dataset zip made by dataset_tool.py is read with training.dataset; its volumes get the
spacing and direction of its dataset.json.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np
import SimpleITK as sitk

from volumes import volume_io
from volumes.contract import dhw_to_xyz
from volumes.packed import PackedDataset

from . import roi as roi_lib
from .settings import Settings

DEFAULT_SEG_SUFFIX = '_seg'

#----------------------------------------------------------------------------
# Cases: picklable loaders, so worker processes read their own volumes.


@dataclasses.dataclass(frozen=True)
class FileCase:
    """A volume file and its mask file (or None)."""
    name: str               # The file stem: the `case` column of features.csv.
    image_path: str
    mask_path: str | None

    def __call__(self) -> tuple[sitk.Image, sitk.Image | None, str, str | None]:
        image = volume_io.read_image(self.image_path)
        mask = volume_io.read_image(self.mask_path) if self.mask_path else None
        return image, mask, self.image_path, self.mask_path

    def size(self) -> tuple[int, int, int]:
        """Voxels (x, y, z), read from the header only."""
        if self.image_path.lower().endswith('.npy'):
            try:
                shape = np.load(self.image_path, mmap_mode='r', allow_pickle=False).shape
            except (OSError, ValueError) as e:
                raise ValueError(f'cannot read {self.image_path}: {e}') from None
            return tuple(int(s) for s in dhw_to_xyz(shape[-3:]))
        reader = sitk.ImageFileReader()
        reader.SetFileName(self.image_path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise ValueError(f'cannot read {self.image_path}: {volume_io.sitk_error_message(e)}') from None
        return tuple(int(s) for s in reader.GetSize())

    def read_mask(self) -> tuple[sitk.Image | None, str | None]:
        """(mask, its name for messages), without reading the volume; (None, None) without a mask."""
        return (volume_io.read_image(self.mask_path), self.mask_path) if self.mask_path else (None, None)


_DATASETS: dict[str, PackedDataset] = {}  # One open dataset per zip and process.


@dataclasses.dataclass(frozen=True)
class ZipCase:
    """One volume of a dataset zip (its first channel) with the dataset's geometry, and its packed label map
    when the dataset has them (dataset_tool.py --seg)."""
    name: str
    path: str
    index: int

    def __call__(self) -> tuple[sitk.Image, sitk.Image | None, str, str | None]:
        dataset = _open_dataset(self.path)
        volume = dataset.volume(self.index)  # [C, D, H, W] in stored units
        info = dataset.volume_info
        place = lambda array: volume_io.array_to_image(array, info.spacing, info.direction,  # noqa: E731
                                                       info.origin(array.shape))
        mask = place(dataset.label_map(self.index)) if dataset.has_label_maps else None
        name = f'{self.path}:{self.name}'
        return place(volume[0]), mask, name, f'{name} (label map)' if mask is not None else None

    def read_mask(self) -> tuple[sitk.Image | None, str | None]:
        """(label map, its name for messages), or (None, None) when the dataset has none."""
        _, mask, _, mask_name = self()
        return mask, mask_name


def _open_dataset(path: str) -> PackedDataset:
    if path not in _DATASETS:
        dataset = PackedDataset(path)
        if dataset.has_label_maps:
            dataset.check_label_maps()
        _DATASETS[path] = dataset
    return _DATASETS[path]


def dataset_has_label_maps(path: str) -> bool:
    return _open_dataset(path).has_label_maps

#----------------------------------------------------------------------------
# Finding cases.


def zip_cases(path: str) -> tuple[list[ZipCase], tuple[int, int, int]]:
    """The volumes of a dataset zip (or dataset folder), each with its label map when the dataset has them, and
    their size (x, y, z)."""
    dataset = _open_dataset(path)
    names = [os.path.splitext(os.path.basename(f))[0] for f in dataset.file_names]
    size = tuple(int(s) for s in dhw_to_xyz(dataset.img_shape))
    return [ZipCase(name, path, i) for i, name in enumerate(names)], size


def _seg_regex(pattern: str) -> re.Pattern:
    head, tail = pattern.split('*')
    return re.compile(re.escape(head) + '(.+)' + re.escape(tail) + r'\Z', flags=re.IGNORECASE)


def _mask_path(root: str, path: str, seg: str | None) -> str:
    """Where the mask of the volume at path would be."""
    ext = volume_io.volume_extension(path)
    stem = os.path.basename(path)[:-len(ext)]
    if seg is None:
        return os.path.join(os.path.dirname(path), f'{stem}{DEFAULT_SEG_SUFFIX}{ext}')
    base = root if '/' in seg else os.path.dirname(path)
    return os.path.join(base, *seg.replace('*', stem).split('/'))


def _is_mask(root: str, path: str, seg: str | None) -> bool:
    if seg is None:
        ext = volume_io.volume_extension(path)
        return os.path.basename(path)[:-len(ext)].lower().endswith(DEFAULT_SEG_SUFFIX)
    rel = os.path.relpath(path, root).replace(os.sep, '/')
    return _seg_regex(seg).match(rel if '/' in seg else os.path.basename(path)) is not None


def folder_cases(root: str, seg: str | None = None) -> list[FileCase]:
    """The volumes in a folder (recursively, sorted by path) with the mask files that exist for them.

    Args:
        root: The folder.
        seg: Mask pattern with exactly one '*' (the volume's name), or None for NAME_seg.<ext> beside each volume.

    Raises:
        ValueError: the folder does not exist or holds no volumes; a malformed pattern.
    """
    if seg is not None and seg.count('*') != 1:
        raise ValueError(f'mask pattern "{seg}" must hold exactly one "*" (the volume\'s name)')
    if not os.path.isdir(root):
        raise ValueError(f'{root} is not a folder')
    cases = []
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for fname in sorted(files):
            path = os.path.join(folder, fname)
            if volume_io.volume_extension(fname) is None or fname.startswith('.') or _is_mask(root, path, seg):
                continue
            mask = _mask_path(root, path, seg)
            cases.append(FileCase(volume_io.strip_extension(fname), path, mask if os.path.isfile(mask) else None))
    if not cases:
        raise ValueError(f'{root} holds no volumes ({", ".join(volume_io.READ_EXTENSIONS)})')
    return cases


def check_masks(cases: list[FileCase], root: str, seg: str | None, required: bool) -> None:
    """Raise ValueError when a mask is required but missing, or when only some volumes of a group have one."""
    missing = [c for c in cases if c.mask_path is None]
    if not missing or (len(missing) == len(cases) and not required):
        return
    expected = _mask_path(root, missing[0].image_path, seg)
    if required:
        raise ValueError(f'no mask for {missing[0].image_path}: expected {expected} '
                         f'({len(missing)} of {len(cases)} volumes lack one; --seg sets the pattern)')
    raise ValueError(f'{missing[0].image_path} has no mask ({expected}) while other volumes of its group have one; '
                     f'give every volume a mask or none')


def mask_problem(case, label: int, settings: Settings | None = None) -> tuple[str, str, str] | None:
    """Why the case's mask gives no ROI, before any feature is computed: (mask name, reason, detail) when it has no
    voxel equal to label or (settings given: the mask is the ROI) the ROI fails PyRadiomics' checks (a single voxel,
    too few dimensions or voxels); None when it is usable or the case has no mask. Checked on the mask's own grid."""
    mask, mask_name = case.read_mask()
    if mask is None:
        return None
    array = sitk.GetArrayViewFromImage(mask)  # [D, H, W]
    roi = array == label
    if not roi.any():
        found = [int(v) for v in np.unique(array) if v != 0][:10]
        return mask_name, f'no voxel with label {label}', f'it holds labels {found}' if found else 'it is empty'
    if settings is not None:
        try:
            roi_lib.check_roi(roi, settings, mask_name)
        except ValueError as e:
            return mask_name, str(e).removeprefix(f'{mask_name}: '), f'{int(roi.sum())} voxels with label {label}'
    return None


@dataclasses.dataclass(frozen=True)
class Intensities:
    """What a group's volumes hold: their voxel types and the median of each volume's minimum and maximum."""
    dtypes: tuple[str, ...]
    low: float
    high: float

    def describe(self) -> str:
        return f'{"/".join(self.dtypes)} {self.low:g}..{self.high:g}'


def intensities(cases: list, most: int = 16) -> Intensities:
    """The intensities of a group, from at most `most` volumes spread evenly over it (enough for a median, and a
    bounded cost: every file is read once more)."""
    picks = sorted({round(i) for i in np.linspace(0, len(cases) - 1, min(most, len(cases)))})
    dtypes, lows, highs = set(), [], []
    for i in picks:
        image = cases[i]()[0]  # Held while its view is read: the view does not keep the image alive.
        voxels = sitk.GetArrayViewFromImage(image)  # [D, H, W]; the reader refuses NaN and infinities.
        dtypes.add(voxels.dtype.name)
        lows.append(float(voxels.min()))
        highs.append(float(voxels.max()))
    return Intensities(tuple(sorted(dtypes)), float(np.median(lows)), float(np.median(highs)))


def units_differ(a: Intensities, b: Intensities) -> bool:
    """True when two groups' intensities look like different units: spans (high - low) more than 2x apart, ranges
    that overlap by less than half the smaller span, or values outside the range of the other group's integer
    type (uint16 values above 255 beside uint8 volumes)."""
    span_a, span_b = a.high - a.low, b.high - b.low
    if max(span_a, span_b) > 2 * min(span_a, span_b):
        return True
    if min(a.high, b.high) - max(a.low, b.low) < 0.5 * min(span_a, span_b):
        return True
    for x, y in ((a, b), (b, a)):
        if len(y.dtypes) == 1 and np.dtype(y.dtypes[0]).kind in 'iu':
            info = np.iinfo(np.dtype(y.dtypes[0]))
            if x.low < info.min or x.high > info.max:
                return True
    return False


def check_sizes(cases: list, sizes: list[tuple[int, int, int]], group: str) -> tuple[int, int, int]:
    """The group's common size (x, y, z), or ValueError naming the first volume of another size."""
    for case, size in zip(cases, sizes):
        if size != sizes[0]:
            show = lambda s: 'x'.join(map(str, s))  # noqa: E731
            raise ValueError(f'{group} volumes differ in size: {getattr(case, "image_path", case.name)} is '
                             f'{show(size)}, {getattr(cases[0], "image_path", cases[0].name)} is {show(sizes[0])}')
    return sizes[0]
