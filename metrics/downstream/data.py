# SPDX-License-Identifier: Apache-2.0
"""The labelled cases of the downstream experiment: where they come from, how they are checked, how they are split.

Every case is held as the packed dataset holds it: the image in the real dataset's stored integers [C, D, H, W]
(uint8 or uint16; volumes.contract.to_unit maps them to [-1, 1] for the segmenter) and its label map as class
indices [D, H, W] uint8 (0 background, k the k-th label value of the record, in ascending order). Real and synthetic
cases are thus on one grid and one intensity scale:

- a packed dataset (dataset_tool.py --seg) is read through volumes.packed.PackedDataset;
- a folder of NAME.<ext> + NAME_seg.<ext> as generate.py writes them: files in the stored integer type are stored
  units; other files are source units (a fixed window, e.g. Hounsfield units), mapped back with the record's
  IntensityMapping. Their grid (size and spacing) must be the real dataset's;
- a network (snapshot or safe export) that makes label maps generates the cases on the fly, quantised to the stored
  integers exactly as generate.py would write them.

Every check raises ValueError with one line naming the file or option and what was expected.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os

import numpy as np

from volumes.contract import VolumeInfo, format_size, from_network, from_unit
from volumes.packed import PackedDataset

#----------------------------------------------------------------------------
# Cases and sets.


@dataclasses.dataclass
class Case:
    """One labelled volume."""
    name: str           # Source name (real) or file stem / seed name (synthetic).
    image: np.ndarray   # [C, D, H, W] in the real dataset's stored dtype.
    labels: np.ndarray  # [D, H, W] uint8 class indices (0 background, k: the k-th label value).

    def identity(self) -> str:
        """A hash of the voxels and labels: identical copies of a volume have the same identity."""
        digest = hashlib.sha256(np.ascontiguousarray(self.image).tobytes())
        digest.update(np.ascontiguousarray(self.labels).tobytes())
        return digest.hexdigest()


@dataclasses.dataclass
class LabelledSet:
    """Cases on one grid with one record (spacing, stored dtype, channel and label names)."""
    source: str
    info: VolumeInfo
    shape: tuple[int, int, int, int]  # [C, D, H, W]
    cases: list[Case]

    @property
    def label_names(self) -> dict[int, str]:
        return dict(self.info.label_names)

    @property
    def class_names(self) -> list[str]:
        """The foreground labels' names in class-index order (1, 2, ...)."""
        return [self.info.label_names[v] for v in sorted(self.info.label_names)]

    def subset(self, indices) -> LabelledSet:
        return dataclasses.replace(self, cases=[self.cases[i] for i in indices])


def describe_labels(names: dict[int, str]) -> str:
    return ', '.join(f'{value} {name}' for value, name in sorted(names.items())) or 'none'


def class_indices(label_map: np.ndarray, label_values: tuple[int, ...], name: str, reference: str) -> np.ndarray:
    """A label map of label values [D, H, W] -> class indices uint8; ValueError for a value the record lacks."""
    lookup = {v: k for k, v in enumerate(label_values)}
    values = np.unique(label_map)
    unknown = [int(v) for v in values if int(v) not in lookup or v != int(v)]
    if unknown:
        known = ', '.join(str(v) for v in label_values[1:])
        raise ValueError(f'{name} holds label values {", ".join(map(str, unknown))} that {reference} does not have '
                         f'(it has {known}); the label maps must use the real dataset\'s labels')
    table = np.zeros(int(values.max()) + 1, dtype=np.uint8)
    for value in values:
        table[int(value)] = lookup[int(value)]
    return table[label_map.astype(np.int64)]

#----------------------------------------------------------------------------
# Packed datasets.


def load_packed(path: str, option: str) -> LabelledSet:
    """A labelled packed dataset (dataset_tool.py --seg); `option` names it in errors ('--real')."""
    try:
        dataset = PackedDataset(path)
    except (OSError, ValueError) as e:
        raise ValueError(f'{option} {" ".join(str(e).split())}') from None
    if not dataset.has_label_maps:
        raise ValueError(f'{option} {path} holds no label maps; the downstream experiment needs a dataset packed '
                         f'with dataset_tool.py --seg')
    info = dataset.volume_info
    if not info.label_names:
        raise ValueError(f'{option} {path} names no foreground labels; pack it with --seg-names')
    try:
        dataset.check_label_maps()
        cases = [Case(name, dataset.volume(i),
                      class_indices(dataset.label_map(i), info.label_values, f'{path}: {name}', path))
                 for i, name in enumerate(dataset.case_names)]
    except ValueError as e:
        raise ValueError(f'{option} {" ".join(str(e).split())}') from None
    return LabelledSet(path, info, tuple(dataset.shape), cases)


def check_compatible(candidate: LabelledSet, reference: LabelledSet, option: str) -> None:
    """The same labels, channels and grid as the reference (the real dataset); ValueError naming `option`."""
    if candidate.label_names != reference.label_names:
        raise ValueError(f'{option} {candidate.source} has labels {describe_labels(candidate.label_names)}; --real '
                         f'has {describe_labels(reference.label_names)}: both must name the same labels')
    check_grid(candidate.shape, candidate.info.spacing, reference, f'{option} {candidate.source}')
    if candidate.info.dtype != reference.info.dtype or candidate.info.intensity != reference.info.intensity:
        raise ValueError(f'{option} {candidate.source} was packed with {candidate.info.describe()}; --real with '
                         f'{reference.info.describe()}: pack both the same way')


def check_grid(shape: tuple[int, ...], spacing_xyz, reference: LabelledSet, what: str) -> None:
    """Channels, size and spacing equal to the reference's; ValueError naming `what`."""
    if shape[0] != reference.shape[0]:
        raise ValueError(f'{what} has {shape[0]} channel(s); --real has {reference.shape[0]}')
    size_ok = tuple(shape[1:]) == tuple(reference.shape[1:])
    spacing_ok = np.allclose(spacing_xyz, reference.info.spacing, rtol=1e-3, atol=1e-4)
    if not (size_ok and spacing_ok):
        spacing = 'x'.join(f'{s:g}' for s in spacing_xyz)
        ref_spacing = 'x'.join(f'{s:g}' for s in reference.info.spacing)
        raise ValueError(f'{what} is on a {format_size(shape[1:])} grid of {spacing} mm voxels; --real is '
                         f'{format_size(reference.shape[1:])} of {ref_spacing} mm: generate or pack it on the real '
                         f'grid')

#----------------------------------------------------------------------------
# A folder of generated volumes.


def folder_pairs(folder: str, option: str) -> list[tuple[str, str, str]]:
    """(name, image path, label map path) of every NAME.<ext> with its NAME_seg.<ext>, sorted by name."""
    from volumes.volume_io import volume_extension
    if not os.path.isdir(folder):
        raise ValueError(f'{option} {folder} is neither a folder of generated volumes nor a network file')
    files = sorted(f for f in os.listdir(folder) if volume_extension(f) and os.path.isfile(os.path.join(folder, f)))
    pairs = []
    for fname in files:
        ext = volume_extension(fname)
        stem = fname[:-len(ext)]
        if stem.endswith('_seg'):
            continue
        seg = f'{stem}_seg{ext}'
        if seg not in files:
            raise ValueError(f'{option} {os.path.join(folder, fname)} has no label map {seg} beside it; generate '
                             f'with a network trained on label maps')
        pairs.append((stem, os.path.join(folder, fname), os.path.join(folder, seg)))
    if not pairs:
        raise ValueError(f'{option} {folder} holds no volumes with label maps (NAME.nii.gz + NAME_seg.nii.gz)')
    return pairs


def read_oriented(path: str):
    """(array [C, D, H, W] float32, the file's voxel dtype, spacing (x, y, z)) of a volume in LPS order."""
    import SimpleITK as sitk
    from volumes import volume_io
    image = volume_io.read_any(path, allow_channels=True)
    dtype = sitk.GetArrayViewFromImage(image).dtype
    if image.GetNumberOfComponentsPerPixel() > 1:
        channels = [volume_io.reorient(sitk.VectorIndexSelectionCast(image, c))
                    for c in range(image.GetNumberOfComponentsPerPixel())]
    else:
        channels = [volume_io.reorient(image)]
    array = np.stack([volume_io.image_to_array(c) for c in channels])  # [C, D, H, W]
    return array, dtype, tuple(channels[0].GetSpacing())


def to_stored(array: np.ndarray, dtype: np.dtype, info: VolumeInfo, path: str) -> np.ndarray:
    """A generated image as written -> the stored integers: as they are when the file holds the stored type, else
    from source units through the record's window."""
    if dtype == np.dtype(info.dtype):
        return array.astype(info.dtype)
    if not info.intensity.invertible:
        raise ValueError(f'{path} holds {dtype} voxels; the real dataset was clipped to per-volume percentiles, so '
                         f'generated volumes must be in its stored units ({info.dtype}: generate.py --units=stored)')
    return np.stack([info.intensity.to_stored(channel, path) for channel in array])


def load_folder(folder: str, reference: LabelledSet, option: str) -> LabelledSet:
    """The generated volumes of a folder, checked against the real set's grid and labels, in its stored units."""
    cases = []
    for name, image_path, seg_path in folder_pairs(folder, option):
        array, dtype, spacing = read_oriented(image_path)
        check_grid(array.shape, spacing, reference, f'{option} {image_path}')
        labels, seg_dtype, seg_spacing = read_oriented(seg_path)
        if labels.shape[1:] != array.shape[1:] or not np.allclose(seg_spacing, spacing, rtol=1e-3):
            raise ValueError(f'{option} {seg_path} is not on the grid of {image_path}')
        if labels.shape[0] != 1 or seg_dtype.kind not in 'ui' or labels.min() < 0:
            raise ValueError(f'{option} {seg_path} is not a label map (one channel of non-negative integers)')
        stored = to_stored(array, dtype, reference.info, image_path)
        cases.append(Case(name, stored, class_indices(labels[0], reference.info.label_values,
                                                     f'{option} {seg_path}', '--real')))
    return LabelledSet(folder, reference.info, reference.shape, cases)

#----------------------------------------------------------------------------
# A network generating them.


def check_network(G, reference: LabelledSet, path: str, option: str) -> None:
    """A generator that makes label maps of the real set's labels on its grid, unconditional."""
    info = G.volume_info
    if not info.label_names:
        raise ValueError(f'{option} {path} makes no label maps; train it on a dataset packed with --seg')
    if info.label_names != reference.label_names:
        raise ValueError(f'{option} {path} makes labels {describe_labels(info.label_names)}; --real has '
                         f'{describe_labels(reference.label_names)}: both must name the same labels')
    check_grid((len(info.channels), *G.img_shape), info.spacing, reference, f'{option} {path}')
    if info.dtype != reference.info.dtype:
        raise ValueError(f'{option} {path} was trained on {info.dtype} volumes; --real holds {reference.info.dtype}')
    if G.c_dim:
        raise ValueError(f'{option} {path} is conditional ({G.c_dim} classes); generate a folder with generate.py '
                         f'--class and pass the folder')


def generate(G, seeds: list[int], reference: LabelledSet, source: str, batch: int, device,
             progress: bool | None = None) -> LabelledSet:
    """Cases generated by G for `seeds` (noise_mode const, no truncation: generate.py's defaults), named seedNNNN and
    quantised to the stored integers as generate.py writes them."""
    import torch

    from training.generation import generate_from_seeds
    info = G.volume_info
    c = torch.zeros([1, 0])
    cases = []
    results = generate_from_seeds(G.to(device).eval(), seeds, c, 1.0, 'const', batch, device,
                                  progress=progress is not False)
    for seed, volume in results:
        image, label_map = from_network(volume, info)
        cases.append(Case(f'seed{seed:04d}', from_unit(image, info.dtype),
                          class_indices(label_map, info.label_values, f'{source} seed {seed}', '--real')))
    return LabelledSet(source, reference.info, reference.shape, cases)

#----------------------------------------------------------------------------
# Splits by case.


def case_key(name: str) -> str:
    """The case a volume belongs to: its source name (a path relative to the packed source) without its volume
    extension, so case1.nii.gz and case1.nrrd are one case, and a/t2.nii.gz and b/t2.nii.gz two."""
    from volumes.volume_io import strip_extension
    return strip_extension(str(name).replace('\\', '/'))


def case_groups(cases: list[Case]) -> list[list[int]]:
    """Indices grouped so that volumes of one case (the same case name) or identical copies (the same voxels and
    labels) share a group, in order of first appearance."""
    parent = list(range(len(cases)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i
    first: dict[str, int] = {}
    for i, case in enumerate(cases):
        for key in ('name:' + case_key(case.name), 'voxels:' + case.identity()):
            if key in first:
                parent[root(i)] = root(first[key])
            else:
                first[key] = i
    groups: dict[int, list[int]] = {}
    for i in range(len(cases)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def split_by_case(cases: list[Case], test_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(training indices, test indices): whole case groups, a seeded random `test_fraction` of them (at least one)
    for testing. ValueError when there are fewer than two groups."""
    groups = case_groups(cases)
    if len(groups) < 2:
        raise ValueError(f'--real holds {len(groups)} distinct case(s); a split into training and test needs at '
                         f'least 2')
    order = np.random.default_rng(seed).permutation(len(groups))
    n_test = min(max(1, int(round(test_fraction * len(groups)))), len(groups) - 1)
    test = sorted(i for g in order[:n_test] for i in groups[g])
    train = sorted(i for g in order[n_test:] for i in groups[g])
    return train, test


def check_disjoint(train: LabelledSet, test: LabelledSet) -> None:
    """A separate test set shares no volume with the training set (identical voxels and labels)."""
    seen = {case.identity(): case.name for case in train.cases}
    for case in test.cases:
        if case.identity() in seen:
            raise ValueError(f'--test {test.source}: {case.name} is a copy of {seen[case.identity()]} in --real; the '
                             f'test cases must be unseen')

