# SPDX-License-Identifier: Apache-2.0
"""The Frechet Radiomics Distance (FRD), v1 and v0, as frd-score 1.0.1 defines them, from this project's features.

FRD compares two sets of volumes by the Frechet distance between Gaussians fitted to their radiomics features
(Osuala et al. 2024 for v0; Konz, Osuala et al., Medical Image Analysis 2026 for v1). What frd-score does with 3D
volumes and no masks (its default), and so what this module does:

- Each volume is read as float32 and measured on the whole volume (no mask). v1 leaves out voxel [0, 0, 0] of the
  mask (a workaround frd-score applies for a PyRadiomics issue); v0 takes every voxel.
- v1 features: PyRadiomics with normalize (scale 100), B-spline resampling to 2 x 2 x 2 mm, padDistance 10, preCrop,
  binWidth 5, voxelArrayShift 300, correctMask, minimumROIDimensions 1, on the original image, LoG sigma 2, 3, 4,
  5 mm and the 8 coif1 wavelet sub-bands; classes firstorder, glcm (22 features: no MCC, no SumAverage), glrlm,
  glszm, ngtdm: 77 features per image, 1001 in all. Plus the 13 numeric entries of PyRadiomics' diagnostics (mean,
  minimum and maximum of the image as read and after resampling; voxel and connected-volume counts of the mask as
  read and after resampling; mean, minimum and maximum inside the resampled mask), which frd-score's v1 keeps.
- v0 features: PyRadiomics' defaults (binWidth 25, no normalisation or resampling) with correctMask and
  minimumROIDimensions 1, original image only, classes firstorder, glcm, glrlm, gldm, glszm, ngtdm and shape (all
  their features: 107).
- v1 distance: per set, volumes with any NaN feature are dropped and the features are cast to float32; both sets
  are z-scored with the first set's mean and (population) standard deviation; features that then hold a NaN or an
  infinity in either set (constant in the first set) are dropped; FRD = log(d^2), d^2 the squared Frechet distance
  |mu1 - mu2|^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) with sample covariances (N - 1), where a product without a finite
  square root is retried with 1e-6 added to both diagonals. The first set is the reference: v1 is not symmetric.
- v0 distance: both sets min-max scaled to [0, 7.45670747756958] by the minimum and maximum of the two sets
  together (a constant feature becomes the middle of the range, NaN too); FRD = d^2 (no logarithm).

The value and its bias: FRD is 0 for identical feature distributions and grows with their distance; v1 is a
logarithm, so it is negative when d^2 < 1 and differences of v1 are ratios of d^2. Like FID it is biased by the
sample counts: with fewer volumes than features (v1 has over 1000) the covariances are rank-deficient and two
samples of the same distribution give a clearly positive value that shrinks as the counts grow. Compare values only
at equal counts (they are reported) and with the same definition.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Callable, Iterator, Sequence

import numpy as np
import SimpleITK as sitk
import tqdm

from ..frechet_inception_distance import frechet_distance
from . import features, settings as settings_lib
from . import roi as roi_lib

VERSIONS = ('v1', 'v0')
V0_NORM_RANGE = (0.0, 7.45670747756958)  # frd-score's v0 min-max range.
V1_GLCM = ('Autocorrelation', 'JointAverage', 'ClusterProminence', 'ClusterShade', 'ClusterTendency', 'Contrast',
           'Correlation', 'DifferenceAverage', 'DifferenceEntropy', 'DifferenceVariance', 'JointEnergy',
           'JointEntropy', 'Imc1', 'Imc2', 'Idm', 'Idmn', 'Id', 'Idn', 'InverseVariance', 'MaximumProbability',
           'SumEntropy', 'SumSquares')
DIAGNOSTICS = ('Image-original_Mean', 'Image-original_Minimum', 'Image-original_Maximum', 'Mask-original_VoxelNum',
               'Mask-original_VolumeNum', 'Image-interpolated_Mean', 'Image-interpolated_Minimum',
               'Image-interpolated_Maximum', 'Mask-interpolated_VoxelNum', 'Mask-interpolated_VolumeNum',
               'Mask-interpolated_Mean', 'Mask-interpolated_Minimum', 'Mask-interpolated_Maximum')

#----------------------------------------------------------------------------
# The two definitions.


@dataclasses.dataclass(frozen=True)
class Definition:
    """What one FRD version measures in a volume."""
    version: str
    options: features.ExtractOptions     # Settings (with the image types) and feature names.
    exclude_corner: bool                 # The whole-volume mask leaves out voxel [0, 0, 0].
    diagnostics: bool                    # The feature vector starts with PyRadiomics' numeric diagnostics.

    @property
    def names(self) -> list[str]:
        """The columns of volume_features, in order."""
        return [f'diagnostics_{d}' for d in DIAGNOSTICS] * self.diagnostics + list(self.options.features)


def _v1() -> Definition:
    settings = settings_lib.settings_from_dict(
        {'normalize': True, 'normalizeScale': 100, 'interpolator': 'sitkBSpline', 'resampledPixelSpacing': [2, 2, 2],
         'padDistance': 10, 'preCrop': True, 'binWidth': 5, 'voxelArrayShift': 300, 'correctMask': True,
         'minimumROIDimensions': 1, 'label': 1},
        {'Original': {}, 'LoG': {'sigma': [2.0, 3.0, 4.0, 5.0]}, 'Wavelet': {}})
    names = features.all_feature_names(['firstorder', 'glrlm', 'glszm', 'ngtdm'])
    names += [features.full_name('glcm', f) for f in V1_GLCM]
    return Definition('v1', features.ExtractOptions(settings=settings, features=tuple(names)), True, True)


def _v0() -> Definition:
    settings = settings_lib.settings_from_dict({'correctMask': True, 'minimumROIDimensions': 1})
    return Definition('v0', features.ExtractOptions(settings=settings, features=tuple(features.all_feature_names())),
                      False, False)


DEFINITIONS = {'v1': _v1(), 'v0': _v0()}


def definition(version: str) -> Definition:
    if version not in DEFINITIONS:
        raise ValueError(f'FRD version "{version}": expected one of {", ".join(VERSIONS)}')
    return DEFINITIONS[version]

#----------------------------------------------------------------------------
# Features of one volume.


def whole_volume_mask(image: sitk.Image, exclude_corner: bool) -> sitk.Image:
    """frd-score's mask when none is given: every voxel (v1: but [0, 0, 0]), on the image's grid."""
    array = np.ones(sitk.GetArrayViewFromImage(image).shape, dtype=np.uint8)  # [D, H, W]
    if exclude_corner:
        array[0, 0, 0] = 0
    mask = sitk.GetImageFromArray(array)
    mask.CopyInformation(image)
    return mask


def _connected_volumes(mask: sitk.Image) -> int:
    """Number of 26-connected components of a 0/1 mask (PyRadiomics' VolumeNum)."""
    counter = sitk.ConnectedComponentImageFilter()
    counter.FullyConnectedOn()
    counter.Execute(mask)
    return int(counter.GetObjectCount())


def _diagnostics(image: sitk.Image, mask: sitk.Image, prepared: roi_lib.Prepared) -> dict[str, float]:
    """PyRadiomics' numeric diagnostics of a volume: as read, and after normalisation and resampling."""
    original = sitk.GetArrayViewFromImage(image).astype(np.float64)
    resampled = sitk.GetArrayViewFromImage(prepared.image).astype(np.float64)
    inside = resampled[prepared.mask]
    resampled_mask = sitk.GetImageFromArray(prepared.mask.astype(np.uint8))
    values = [original.mean(), original.min(), original.max(),
              int(np.count_nonzero(sitk.GetArrayViewFromImage(mask))), _connected_volumes(mask),
              resampled.mean(), resampled.min(), resampled.max(),
              int(np.count_nonzero(prepared.mask)), _connected_volumes(resampled_mask),
              inside.mean(), inside.min(), inside.max()]
    return {f'diagnostics_{k}': float(v) for k, v in zip(DIAGNOSTICS, values)}


def volume_features(image: sitk.Image, version: str, name: str = 'volume') -> dict[str, float]:
    """One volume's FRD feature vector, {name: value} in Definition.names order.

    Raises:
        ValueError: a volume too small for the definition (fewer than 2 voxels, or too small for a LoG sigma).
    """
    spec = definition(version)
    image = sitk.Cast(image, sitk.sitkFloat32)  # frd-score reads every file as float32.
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f'{name}: FRD needs a scalar 3D volume')
    mask = whole_volume_mask(image, spec.exclude_corner)
    if int(np.count_nonzero(sitk.GetArrayViewFromImage(mask))) <= 1:
        raise ValueError(f'{name}: the volume has fewer than 2 voxels to measure')
    options = spec.options
    prepared = roi_lib.preprocess(image, mask, options.settings, name)
    values = _diagnostics(image, mask, prepared) if spec.diagnostics else {}
    if 'shape' in features.classes_of(options.features):
        roi = prepared.roi()
        values.update({features.full_name('shape', k): v
                       for k, v in features.shape_features(roi.mask, roi.spacing).items()})
    values.update(features.intensity_features(prepared, options, name))
    return {k: float(values[k]) for k in spec.names}


def _volume_row(job: tuple[Callable, str]) -> np.ndarray:
    load, version = job
    image, name = load()
    return np.array(list(volume_features(image, version, name).values()), dtype=np.float64)


def extract(loaders: Sequence[Callable[[], tuple[sitk.Image, str]]], version: str, workers: int = 1,
            progress: Callable[[Iterator], Iterator] | None = None) -> np.ndarray:
    """FRD features [N, F] of the volumes the loaders return ((image, name) each), in worker processes when
    workers > 1; columns in Definition.names order."""
    rows = features.parallel_map(_volume_row, [(load, version) for load in loaders], workers, progress)
    return np.array(rows, dtype=np.float64).reshape(len(loaders), len(definition(version).names))

#----------------------------------------------------------------------------
# The distance.


@dataclasses.dataclass(frozen=True)
class FrdResult:
    """One FRD value and what it was computed from."""
    version: str
    value: float                  # v1: log(d^2); v0: d^2.
    num_first: int                # Volumes of the first (reference) set that entered the statistics.
    num_second: int
    num_features: int             # Features that entered the distance (after dropping constant ones, for v1).

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _statistics(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [F] and sample covariance [F, F] (N - 1, float64) of rows [N, F]."""
    return np.mean(x, axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _check(first: np.ndarray, second: np.ndarray) -> None:
    if first.ndim != 2 or second.ndim != 2 or first.shape[1] != second.shape[1]:
        raise ValueError(f'FRD needs two feature tables [N, F] with the same F, got {first.shape} and {second.shape}')


def frd_v1(first: np.ndarray, second: np.ndarray) -> FrdResult:
    """FRD v1 of two feature tables [N, F] (v1 features; first: the reference set)."""
    _check(first, second)
    sets = [x[~np.isnan(x).any(axis=1)].astype(np.float32) for x in (first, second)]  # As frd-score's v1.
    if min(len(x) for x in sets) < 2:
        raise ValueError(f'FRD needs at least 2 volumes per set with finite features, got {len(sets[0])} and '
                         f'{len(sets[1])}')
    mean, std = np.nanmean(sets[0], axis=0), np.nanstd(sets[0], axis=0)
    with np.errstate(divide='ignore', invalid='ignore'):
        z = [(x - mean) / std for x in sets]  # Inf or NaN where the reference set is constant.
    keep = ~np.any([~np.isfinite(x).all(axis=0) for x in z], axis=0)
    if not keep.any():
        raise ValueError('FRD v1: every feature is constant in the first set')
    d2 = frechet_distance(*_statistics(z[0][:, keep]), *_statistics(z[1][:, keep]))
    value = float(np.log(d2)) if d2 > 0 else float('-inf')
    return FrdResult('v1', value, len(sets[0]), len(sets[1]), int(keep.sum()))


def frd_v0(first: np.ndarray, second: np.ndarray) -> FrdResult:
    """FRD v0 of two feature tables [N, F] (v0 features)."""
    _check(first, second)
    if min(len(first), len(second)) < 2:
        raise ValueError(f'FRD needs at least 2 volumes per set, got {len(first)} and {len(second)}')
    low, high = V0_NORM_RANGE
    both = np.concatenate([first, second])
    with np.errstate(invalid='ignore'):  # All-NaN columns: left NaN here, set to the middle below.
        lo, hi = np.nanmin(both, axis=0), np.nanmax(both, axis=0)
    span = hi - lo
    scaled = []
    for x in (first, second):
        with np.errstate(divide='ignore', invalid='ignore'):
            y = np.where(span == 0, 0.5, (x - lo) / span) * (high - low) + low
        scaled.append(np.where(np.isnan(y), (low + high) / 2, y))
    d2 = frechet_distance(*_statistics(scaled[0]), *_statistics(scaled[1]))
    return FrdResult('v0', float(d2), len(first), len(second), first.shape[1])


def frd(first: np.ndarray, second: np.ndarray, version: str) -> FrdResult:
    """FRD of two feature tables of one version (first: the reference set, the real volumes)."""
    definition(version)
    return frd_v1(first, second) if version == 'v1' else frd_v0(first, second)

#----------------------------------------------------------------------------
# radiomics.py --frd: FRD of the groups of volumes it compares.

DEFINITION = 'frd-score 1.0.1: whole volumes (no mask), read as float32'


@dataclasses.dataclass(frozen=True)
class ImageOf:
    """A picklable loader of the image alone from radiomics.py's cases (which return image, mask, names)."""
    case: Callable

    def __call__(self) -> tuple[sitk.Image, str]:
        image, _mask, name, _mask_name = self.case()
        return image, name


def frd_report(groups: dict[str, Sequence[Callable]], workers: int = 1, progress: bool | None = None) -> dict:
    """FRD v1 and v0 of the fakes (and of the reference, when given) against the reals, with the sample counts.

    Args:
        groups: radiomics.py's cases by group: 'real', 'fake' and optionally 'reference'; masks are not used.
        workers: Extraction processes.
        progress: Progress bars on stderr; None: on a terminal only.

    Returns:
        {'v1', 'v0', 'num_real', 'num_fake', 'num_features': {'v1', 'v0'}, 'definition'} and, with a reference,
        'reference_vs_real' holding the same for the reference set ('num_reference' for 'num_fake').
    """
    tables = {}
    for version in VERSIONS:
        for group, cases in groups.items():
            bar = lambda it, g=group, v=version, n=len(cases): tqdm.tqdm(  # noqa: E731
                it, total=n, desc=f'FRD {v} {g:9s}', unit='vol', file=sys.stderr, dynamic_ncols=True,
                disable=None if progress is None else not progress)
            tables[version, group] = extract([ImageOf(c) for c in cases], version, workers, bar)

    def against_reals(group: str) -> dict:
        results = {v: frd(tables[v, 'real'], tables[v, group], v) for v in VERSIONS}
        return {**{v: r.value for v, r in results.items()}, 'num_real': results['v1'].num_first,
                f'num_{group}': results['v1'].num_second,
                'num_features': {v: r.num_features for v, r in results.items()}, 'definition': DEFINITION}

    report = against_reals('fake')
    if 'reference' in groups:
        report['reference_vs_real'] = against_reals('reference')
    return report


def summary_line(report: dict) -> str:
    """One line for the terminal: both values and the counts they come from."""
    line = (f'FRD v1 {report["v1"]:.4g}  v0 {report["v0"]:.4g}  ({report["num_fake"]} fake vs {report["num_real"]} '
            f'real volumes; compare only at equal counts)')
    ref = report.get('reference_vs_real')
    if ref:
        line += f'\nFRD reference vs real: v1 {ref["v1"]:.4g}  v0 {ref["v0"]:.4g}  ({ref["num_reference"]} volumes)'
    return line
