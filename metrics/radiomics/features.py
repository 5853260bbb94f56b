# SPDX-License-Identifier: Apache-2.0
"""PyRadiomics-compatible features of 3D volumes: first-order and shape here, texture in texture.py, and the
extraction of all of them from an image and its mask (one volume, or many in parallel worker processes).

Feature names follow PyRadiomics: `<image>_<class>_<Feature>`, e.g. `original_glcm_Contrast`, and for the
filtered image types of the settings (filters.py) `log-sigma-2-0-mm-3D_firstorder_Mean` or
`wavelet-LLH_glcm_Contrast`; shape features exist for the original image only. The values agree with PyRadiomics'
published baseline (tests/metrics/test_radiomics_features.py) and, for the filtered images, with values PyRadiomics
computed (tests/metrics/test_radiomics_filters.py). Where PyRadiomics departs from IBSI (bin edges from multiples of
the bin width, voxels without neighbours in the NGTDM, the mesh of the shape class), this module follows PyRadiomics.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
from typing import Callable, Collection, Iterable, Iterator, Sequence

import numpy as np
import scipy.spatial
import scipy.stats
import SimpleITK as sitk

from volumes import volume_io

from . import filters
from . import roi as roi_lib
from . import texture
from .settings import ROI_MODES, ImageType, Settings
from volumes.contract import xyz_to_dhw

EPS = np.spacing(1)

#----------------------------------------------------------------------------
# First order.


def firstorder_features(roi: roi_lib.Roi, levels: np.ndarray, settings: Settings) -> dict[str, float]:
    """PyRadiomics' 18 first-order features of the ROI's intensities (levels: its gray levels, for the
    histogram-based Entropy and Uniformity)."""
    x = roi.values
    shifted = x + settings.voxelArrayShift  # Energy and RMS see shifted values, so negative images stay meaningful.
    energy = float(np.sum(shifted ** 2))
    p = np.bincount(levels[roi.mask]).astype(np.float64)
    p = p[p > 0] / x.size
    p10, p25, median, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    robust = x[(x >= p10) & (x <= p90)]
    flat = np.ptp(x) == 0  # Skewness and kurtosis of a flat ROI are 0 by PyRadiomics' convention.
    return {
        'Energy': energy,
        'TotalEnergy': energy * float(np.prod(roi.spacing)),
        'Entropy': float(-np.sum(p * np.log2(p + EPS))),
        'Minimum': float(x.min()),
        '10Percentile': float(p10),
        '90Percentile': float(p90),
        'Maximum': float(x.max()),
        'Mean': float(x.mean()),
        'Median': float(median),
        'InterquartileRange': float(p75 - p25),
        'Range': float(np.ptp(x)),
        'MeanAbsoluteDeviation': float(np.mean(np.abs(x - x.mean()))),
        # No value between the 10th and 90th percentiles (an ROI of 2 voxels): NaN, as PyRadiomics, without a warning.
        'RobustMeanAbsoluteDeviation': float(np.mean(np.abs(robust - robust.mean()))) if robust.size else math.nan,
        'RootMeanSquared': float(np.sqrt(energy / x.size)),
        'Skewness': 0.0 if flat else float(scipy.stats.skew(x)),
        'Kurtosis': 0.0 if flat else float(scipy.stats.kurtosis(x, fisher=False)),
        'Variance': float(np.var(x)),
        'Uniformity': float(np.sum(p ** 2)),
    }

#----------------------------------------------------------------------------
# Shape.


def _mesh(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes mesh of the mask's surface at level 0.5 (vertices on edge midpoints), after padding the mask
    by one voxel so the surface closes: vertices [V, 3] in voxel units (z, y, x) and triangles [F, 3]."""
    from skimage.measure import marching_cubes  # Imported here: only the shape class needs scikit-image.
    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = marching_cubes(padded, level=0.5, method='lorensen')
    return verts.astype(np.float64), faces


def _max_distance(points: np.ndarray) -> float:
    """Largest distance between two of the points [N, k]: found among the vertices of their convex hull."""
    if len(points) < 2:
        return 0.0
    if len(points) > 64:
        try:
            points = points[scipy.spatial.ConvexHull(points).vertices]
        except scipy.spatial.QhullError:  # Coplanar or collinear points: fall back to all pairs.
            pass
    return float(scipy.spatial.distance.pdist(points).max())


def _planar_diameters(verts_index: np.ndarray, verts_mm: np.ndarray, axis: int) -> float:
    """Largest distance between two vertices that share their coordinate along axis (one plane).

    Planes are visited from the largest bounding-box diagonal down, which bounds their diameter: once it falls
    below the best distance found, no later plane can beat it.
    """
    key = np.rint(verts_index[:, axis] * 2).astype(np.int64)  # Vertices sit on whole or half voxels.
    order = np.argsort(key, kind='stable')
    starts = np.concatenate([[0], np.flatnonzero(np.diff(key[order])) + 1])
    ends = np.append(starts[1:], len(key))
    points = verts_mm[order][:, [a for a in range(3) if a != axis]]  # [V, 2] in-plane coordinates.
    bound = np.linalg.norm(np.maximum.reduceat(points, starts) - np.minimum.reduceat(points, starts), axis=1)
    best = 0.0
    for g in np.argsort(-bound):
        if bound[g] <= best:
            break
        best = max(best, _max_distance(points[starts[g]:ends[g]]))
    return best


def shape_features(mask: np.ndarray, spacing_xyz: Sequence[float]) -> dict[str, float]:
    """PyRadiomics' 14 shape features of a mask [D, H, W] bool with voxel spacing (x, y, z) mm."""
    spacing = np.asarray(xyz_to_dhw(spacing_xyz), dtype=np.float64)  # (z, y, x), the array's axis order.
    verts, faces = _mesh(mask)
    verts_mm = verts * spacing
    a, b, c = (verts_mm[faces[:, k]] for k in range(3))  # [F, 3] each.
    area = float(0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1).sum())
    volume = float(abs(np.einsum('ij,ij->', a, np.cross(b, c))) / 6)  # Divergence theorem over the closed mesh.
    count = int(mask.sum())
    centred = np.argwhere(mask) * spacing
    centred -= centred.mean(0)
    eig = np.clip(np.sort(np.linalg.eigvalsh(centred.T @ centred / count)), 0, None)  # Ascending.
    with np.errstate(divide='ignore', invalid='ignore'):
        return {
            'MeshVolume': volume,
            'VoxelVolume': count * float(np.prod(spacing)),
            'SurfaceArea': area,
            'SurfaceVolumeRatio': area / volume,
            'Sphericity': float((36 * np.pi * volume ** 2) ** (1 / 3) / area),
            'Maximum3DDiameter': _max_distance(verts_mm),
            'Maximum2DDiameterSlice': _planar_diameters(verts, verts_mm, 0),
            'Maximum2DDiameterColumn': _planar_diameters(verts, verts_mm, 1),
            'Maximum2DDiameterRow': _planar_diameters(verts, verts_mm, 2),
            'MajorAxisLength': float(4 * np.sqrt(eig[2])),
            'MinorAxisLength': float(4 * np.sqrt(eig[1])),
            'LeastAxisLength': float(4 * np.sqrt(eig[0])),
            'Elongation': float(np.sqrt(eig[1] / eig[2])),
            'Flatness': float(np.sqrt(eig[0] / eig[2])),
        }

#----------------------------------------------------------------------------
# The classes and their names.


FIRSTORDER_NAMES = ('10Percentile', '90Percentile', 'Energy', 'Entropy', 'InterquartileRange', 'Kurtosis', 'Maximum',
                    'Mean', 'MeanAbsoluteDeviation', 'Median', 'Minimum', 'Range', 'RobustMeanAbsoluteDeviation',
                    'RootMeanSquared', 'Skewness', 'TotalEnergy', 'Uniformity', 'Variance')
SHAPE_NAMES = ('Elongation', 'Flatness', 'LeastAxisLength', 'MajorAxisLength', 'Maximum2DDiameterColumn',
               'Maximum2DDiameterRow', 'Maximum2DDiameterSlice', 'Maximum3DDiameter', 'MeshVolume', 'MinorAxisLength',
               'Sphericity', 'SurfaceArea', 'SurfaceVolumeRatio', 'VoxelVolume')
CLASS_FEATURES = {  # PyRadiomics' output order: shape first, then the other classes alphabetically.
    'shape': SHAPE_NAMES,
    'firstorder': FIRSTORDER_NAMES,
    'glcm': texture.GLCM_NAMES,
    'gldm': texture.GLDM_NAMES,
    'glrlm': texture.GLRLM_NAMES,
    'glszm': texture.GLSZM_NAMES,
    'ngtdm': texture.NGTDM_NAMES,
}
INTENSITY_CLASSES = ('firstorder', 'glcm', 'gldm', 'glrlm', 'glszm', 'ngtdm')  # All but shape read intensities.
PREFIX = filters.ORIGINAL_PREFIX


def full_name(cls: str, feature: str, prefix: str = PREFIX) -> str:
    return f'{prefix}_{cls}_{feature}'


def split_name(name: str) -> tuple[str, str, str]:
    """'wavelet-LLH_glcm_Contrast' -> ('wavelet-LLH', 'glcm', 'Contrast')."""
    prefix, cls, feature = name.split('_', 2)
    return prefix, cls, feature


def expand_image_types(names: Iterable[str], image_types: Sequence[ImageType]) -> list[str]:
    """Full names for every image type, as PyRadiomics applies each featureClass to each imageType: every
    `original_` feature of an intensity class is computed for each image the image types give; shape features stay
    `original_` (computed from the mask, not from an image). Names given with another image's prefix are kept.
    Ordered shape first, then image by image (the image types' order), classes and features in PyRadiomics' order.

    Raises:
        ValueError: a name whose image no image type gives.
    """
    names = list(names)
    images = [p for t in image_types for p in filters.prefixes(t)]
    wanted = {(cls, f) for p, cls, f in map(split_name, names) if p == PREFIX and cls != 'shape'}
    explicit = set(names)
    stray = [n for n in names if split_name(n)[0] not in images + [PREFIX]]
    if stray:
        raise ValueError(f'feature {stray[0]}: no image type gives the image "{split_name(stray[0])[0]}" '
                         f'(images: {", ".join(images)})')
    out = [n for n in all_feature_names(['shape']) if n in explicit]
    for prefix in images:
        out += [full_name(cls, f, prefix) for cls in INTENSITY_CLASSES for f in CLASS_FEATURES[cls]
                if (cls, f) in wanted or full_name(cls, f, prefix) in explicit]
    return out


def all_feature_names(classes: Iterable[str] | None = None) -> list[str]:
    """Full names of every feature of the classes (default: all seven), in PyRadiomics' order."""
    wanted = set(CLASS_FEATURES if classes is None else classes)
    return [full_name(c, f) for c, names in CLASS_FEATURES.items() if c in wanted for f in names]


def parse_features(spec: str | Iterable[str]) -> list[str]:
    """Full feature names from classes and names: 'glcm', 'glcm_Contrast' or 'original_glcm_Contrast', comma-
    separated or as a list; 'all' means every feature. Returned in PyRadiomics' order, without duplicates.

    Raises:
        ValueError: an unknown class or feature name (naming it and what is valid).
    """
    items = [s.strip() for s in (spec.split(',') if isinstance(spec, str) else spec) if s.strip()]
    if not items:
        raise ValueError('no features given')
    wanted = set()
    for item in items:
        parts = item.split('_', 2) if item.startswith(PREFIX + '_') else [PREFIX, *item.split('_', 1)]
        if item == 'all':
            wanted.update(all_feature_names())
            continue
        cls = parts[1]
        if cls not in CLASS_FEATURES:
            raise ValueError(f'unknown feature class or name "{item}" (classes: {", ".join(CLASS_FEATURES)}; '
                             f'names like glcm_Contrast)')
        if len(parts) == 2:
            wanted.update(all_feature_names([cls]))
        elif parts[2] in CLASS_FEATURES[cls]:
            wanted.add(full_name(cls, parts[2]))
        else:
            raise ValueError(f'unknown feature "{item}": class {cls} has {", ".join(CLASS_FEATURES[cls])}')
    return [name for name in all_feature_names() if name in wanted]


def classes_of(names: Iterable[str], prefix: str | None = None) -> list[str]:
    """The classes (in PyRadiomics' order) that the full feature names (of the image `prefix`; None: of any)
    belong to."""
    present = {cls for p, cls, _ in map(split_name, names) if prefix is None or p == prefix}
    return [c for c in CLASS_FEATURES if c in present]


def compute_class(cls: str, roi: roi_lib.Roi, levels: np.ndarray | None, settings: Settings,
                  wanted: Collection[str] | None = None) -> dict[str, float]:
    """All features of one class for a prepared ROI (levels: its gray levels; unused by shape). With `wanted` (short
    names), features that are costly and not wanted may be left NaN."""
    s = settings
    if cls == 'shape':
        return shape_features(roi.mask, roi.spacing)
    if cls == 'firstorder':
        return firstorder_features(roi, levels, s)
    if cls == 'glcm':
        return texture.glcm_features(levels, s.distances, s.symmetricalGLCM, s.weightingNorm, roi.spacing,
                                     mcc=wanted is None or 'MCC' in wanted)
    if cls == 'glrlm':
        return texture.glrlm_features(levels, s.weightingNorm, roi.spacing)
    if cls == 'glszm':
        return texture.glszm_features(levels)
    if cls == 'gldm':
        return texture.gldm_features(levels, s.distances, s.gldm_a)
    if cls == 'ngtdm':
        return texture.ngtdm_features(levels, s.distances)
    raise ValueError(f'unknown feature class "{cls}"')

#----------------------------------------------------------------------------
# Extraction.


@dataclasses.dataclass(frozen=True)
class ExtractOptions:
    """What to extract and from where.

    `features` are full names; the `original_` ones of intensity classes are computed for every image type of the
    settings (expand_image_types), so after construction `features` lists every name extract returns.
    """
    settings: Settings = Settings()                    # PyRadiomics settings (with the image types).
    features: tuple[str, ...] = tuple(all_feature_names())  # Full feature names.
    roi: str = 'mask'                                  # mask: the label; box: a box; split: box, but shape on mask.
    box_mm: tuple[float, float, float] | None = None   # Box size (x, y, z) mm, for roi box and split.

    def __post_init__(self) -> None:
        object.__setattr__(self, 'features', tuple(expand_image_types(self.features, self.settings.imageType)))
        if self.roi not in ROI_MODES:
            raise ValueError(f'roi must be one of {", ".join(ROI_MODES)}, got "{self.roi}"')
        if self.roi != 'mask' and (self.box_mm is None or len(self.box_mm) != 3 or min(self.box_mm) <= 0):
            raise ValueError(f'roi {self.roi} needs a box size: three positive numbers (x, y, z) in mm')
        if self.roi == 'box' and 'shape' in classes_of(self.features):
            raise ValueError('shape features of a fixed box are constant: use roi mask or split for shape')

    @property
    def needs_mask(self) -> bool:
        """True when a mask is required (roi mask, or shape features in split mode)."""
        return self.roi == 'mask' or (self.roi == 'split' and 'shape' in classes_of(self.features))


def extract(image: sitk.Image, mask: sitk.Image | None, options: ExtractOptions, name: str = 'volume',
            mask_name: str | None = None) -> dict[str, float]:
    """The features of one volume.

    Args:
        image: Scalar 3D image in its own units (spacing in mm).
        mask: Label map on the image's grid, or None (only for roi box, where the box is centred on the volume).
        options: Settings, features and ROI mode.
        name: How errors name the image; mask_name likewise for the mask.

    Returns:
        {full feature name: value} for options.features, in their order.

    Raises:
        ValueError: a mask on another grid, an empty or degenerate ROI, a missing mask where one is needed.
    """
    settings = options.settings
    label = None
    if mask is not None:
        mask_name = mask_name or f'of {name}'
        if settings.correctMask and not volume_io.same_grid(volume_io.image_grid(image), volume_io.image_grid(mask)):
            mask = roi_lib.correct_mask(image, mask, settings.label, mask_name)
        roi_lib.check_same_grid(image, mask, name, mask_name)
        label = roi_lib.label_mask(mask, settings.label, mask_name)
    elif options.needs_mask:
        raise ValueError(f'{name} has no mask, and roi {options.roi} needs one')
    classes = classes_of(options.features)
    intensity = [c for c in classes if c != 'shape']
    mask_prepared = roi_lib.preprocess(image, label, settings, name) if label is not None and (
        'shape' in classes or (intensity and options.roi == 'mask')) else None
    values: dict[str, float] = {}
    if 'shape' in classes:
        shape_roi = mask_prepared.roi()
        values.update({full_name('shape', k): v for k, v in shape_features(shape_roi.mask, shape_roi.spacing).items()})
    if intensity:
        prepared = mask_prepared if options.roi == 'mask' else roi_lib.preprocess(
            image, roi_lib.box_mask(image, options.box_mm, label), settings, name)
        values.update(intensity_features(prepared, options, name))
    return {k: float(values[k]) for k in options.features}


def intensity_features(prepared: roi_lib.Prepared, options: ExtractOptions, name: str = 'volume') -> dict[str, float]:
    """The features of every intensity class in options.features, image by image (original and filtered), from a
    pre-processed image: each image is cropped to the ROI's bounding box, discretised, and measured."""
    settings = options.settings
    values: dict[str, float] = {}
    for image_type in settings.imageType:
        # {image name: {class: feature names}} of this image type's images.
        wanted: dict[str, dict[str, set[str]]] = {p: {} for p in filters.prefixes(image_type)}
        for prefix, cls, feature in map(split_name, options.features):
            if prefix in wanted and cls != 'shape':
                wanted[prefix].setdefault(cls, set()).add(feature)
        if not any(wanted.values()):
            continue
        for prefix, image in filters.filtered_images(prepared.image, image_type, name):
            if not wanted[prefix]:
                continue
            roi = prepared.roi(image)
            levels = roi_lib.discretize(roi, settings)
            for cls, names in wanted[prefix].items():
                values.update({full_name(cls, k, prefix): v
                               for k, v in compute_class(cls, roi, levels, settings, names).items()})
    return values


def _init_worker() -> None:
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # Parallel across volumes: one thread per process.


def parallel_map(fn: Callable, jobs: Sequence, workers: int = 1,
                 progress: Callable[[Iterator], Iterator] | None = None) -> list:
    """[fn(job) for job in jobs], in worker processes when workers > 1 (fn and jobs picklable), in input order;
    progress wraps the iterator of results (e.g. a tqdm with total=len(jobs))."""
    wrap = progress or (lambda it: it)
    if workers <= 1 or len(jobs) <= 1:
        return list(wrap(map(fn, jobs)))
    context = multiprocessing.get_context('fork' if 'fork' in multiprocessing.get_all_start_methods() else None)
    with context.Pool(min(workers, len(jobs)), initializer=_init_worker) as pool:
        return list(wrap(pool.imap(fn, jobs, chunksize=1)))


def _extract_job(job: tuple[Callable, ExtractOptions]) -> dict[str, float]:
    load, options = job
    image, mask, name, mask_name = load()
    return extract(image, mask, options, name, mask_name)


def extract_many(loaders: Sequence[Callable], options: ExtractOptions, workers: int = 1,
                 progress: Callable[[Iterator], Iterator] | None = None) -> list[dict[str, float]]:
    """The features of many volumes, in worker processes when workers > 1, in input order.

    Args:
        loaders: Picklable callables returning (image, mask or None, name, mask name), e.g. sources.Case.
        options: What to extract.
        workers: Processes; 1 computes here.
        progress: Wraps the iterator of results (e.g. a tqdm with total=len(loaders)).

    Raises:
        ValueError: the first volume that fails, naming it.
    """
    return parallel_map(_extract_job, [(load, options) for load in loaders], workers, progress)
