# SPDX-License-Identifier: Apache-2.0
"""Extraction settings with PyRadiomics' names, defaults and meaning, and its parameter files (YAML or JSON).

A parameter file has up to four sections: `setting` (read here), `imageType` (only `Original` is computed),
`featureClass` (which classes and features to compute) and `voxelSetting` (voxel-based extraction, which this
module does not do, so it is ignored). Settings that only configure image filters (LoG, wavelet, LBP) are accepted
and ignored because this module extracts from the original image only; settings that would change the values in
a way this module does not implement (force2D, resegmentRange, a mask channel) are refused with an error.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

# PyRadiomics' interpolator names (SimpleITK enum names); the feature classes resample with these.
INTERPOLATORS = ('sitkNearestNeighbor', 'sitkLinear', 'sitkBSpline', 'sitkGaussian', 'sitkLabelGaussian',
                 'sitkHammingWindowedSinc', 'sitkCosineWindowedSinc', 'sitkWelchWindowedSinc',
                 'sitkLanczosWindowedSinc', 'sitkBlackmanWindowedSinc')
WEIGHTING_NORMS = ('manhattan', 'euclidean', 'infinity', 'no_weighting')
ROI_MODES = ('mask', 'box', 'split')  # The label's voxels; a fixed box; the box, but shape from the mask.

# Settings whose value never changes the original image's features (checks, logging, filter parameters).
_IGNORED = {'additionalInfo', 'geometryTolerance', 'correctMask', 'preCrop', 'enableCExtensions', 'force2Ddimension',
            'resegmentShape', 'sigma', 'start_level', 'level', 'wavelet', 'gradientUseSpacing', 'lbp2DRadius',
            'lbp2DSamples', 'lbp2DMethod', 'lbp3DLevels', 'lbp3DIcosphereRadius', 'lbp3DIcosphereSubdivision'}
# Settings that change values in ways not implemented here: refused unless they hold the default.
_REFUSED_UNLESS_DEFAULT = {'force2D': False, 'resegmentRange': None, 'resegmentMode': 'absolute', 'label_channel': 0}

#----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Settings:
    """The settings that shape the features, named as in PyRadiomics' parameter files (defaults: PyRadiomics')."""
    binWidth: float = 25.0                              # Fixed bin width in image units (ignored with binCount).
    binCount: int | None = None                         # Fixed number of bins instead of a bin width.
    voxelArrayShift: float = 0.0                        # Added to intensities in Energy, TotalEnergy, RMS.
    distances: tuple[int, ...] = (1,)                   # Neighbour distances (infinity norm): GLCM, GLDM, NGTDM.
    resampledPixelSpacing: tuple[float, ...] | None = None  # Resample to this spacing (x, y, z) mm; 0 keeps an axis.
    interpolator: str = 'sitkBSpline'                   # Image interpolator when resampling (the mask: nearest).
    padDistance: int = 5                                # Voxels kept around the ROI when resampling.
    label: int = 1                                      # Mask value of the region of interest.
    normalize: bool = False                             # Z-score the whole image before anything else.
    normalizeScale: float = 1.0                         # Multiply the z-scores by this.
    removeOutliers: float | None = None                 # Clip z-scores at +-this many standard deviations.
    minimumROIDimensions: int = 2                       # Axes along which the ROI must span more than one voxel.
    minimumROISize: int | None = None                   # Refuse ROIs with at most this many voxels.
    gldm_a: float = 0.0                                 # GLDM: neighbours within this gray-level distance depend.
    symmetricalGLCM: bool = True                        # Count each GLCM pair in both orders.
    weightingNorm: str | None = None                    # Weight GLCM/GLRLM angles by distance, then merge them.

    def __post_init__(self) -> None:
        if self.binCount is None and not self.binWidth > 0:
            raise ValueError(f'binWidth must be positive, got {self.binWidth}')
        if self.binCount is not None and self.binCount < 1:
            raise ValueError(f'binCount must be a positive integer, got {self.binCount}')
        if not self.distances or any(int(d) != d or d < 1 for d in self.distances):
            raise ValueError(f'distances must be positive integers, got {list(self.distances)}')
        if self.resampledPixelSpacing is not None and (len(self.resampledPixelSpacing) != 3 or
                                                       min(self.resampledPixelSpacing) < 0):
            raise ValueError(f'resampledPixelSpacing must be 3 numbers >= 0 (x, y, z), got '
                             f'{list(self.resampledPixelSpacing)}')
        if self.interpolator not in INTERPOLATORS:
            raise ValueError(f'interpolator "{self.interpolator}" is not one of {", ".join(INTERPOLATORS)}')
        if self.weightingNorm is not None and self.weightingNorm not in WEIGHTING_NORMS:
            raise ValueError(f'weightingNorm "{self.weightingNorm}" is not one of {", ".join(WEIGHTING_NORMS)}')
        if self.padDistance < 0 or self.label < 1 or self.gldm_a < 0 or self.minimumROIDimensions not in (1, 2, 3):
            raise ValueError('padDistance and gldm_a must be >= 0, label >= 1, minimumROIDimensions 1, 2 or 3')

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-friendly dict with PyRadiomics' names."""
        out = dataclasses.asdict(self)
        out['distances'] = list(self.distances)
        if self.resampledPixelSpacing is not None:
            out['resampledPixelSpacing'] = list(self.resampledPixelSpacing)
        return out

#----------------------------------------------------------------------------
# Conversion from PyRadiomics' dicts and files.


def _convert(name: str, value: Any) -> Any:
    """One setting from a parameter file into the type Settings holds."""
    if name == 'distances':
        return tuple(int(v) for v in (value if isinstance(value, (list, tuple)) else [value]))
    if name == 'resampledPixelSpacing':
        return None if value is None else tuple(float(v) for v in value)
    if name in ('binWidth', 'voxelArrayShift', 'normalizeScale', 'gldm_a'):
        return float(value)
    if name == 'removeOutliers':
        return None if value is None else float(value)
    if name in ('binCount', 'minimumROISize'):
        return None if value is None else int(value)
    if name in ('label', 'padDistance', 'minimumROIDimensions'):
        return int(value)
    if name in ('normalize', 'symmetricalGLCM'):
        if not isinstance(value, bool):
            raise ValueError(f'setting {name} must be true or false, got {value!r}')
        return value
    if name == 'interpolator':
        return _interpolator_name(value)
    return value


def _interpolator_name(value: Any) -> str:
    """PyRadiomics accepts the SimpleITK name ('sitkBSpline') or its integer enum value; return the name."""
    if isinstance(value, str):
        return value
    import SimpleITK as sitk
    for name in INTERPOLATORS:
        if getattr(sitk, name, None) == value:
            return name
    raise ValueError(f'interpolator {value!r} is not a SimpleITK interpolator')


def settings_from_dict(setting: dict[str, Any] | None) -> Settings:
    """Settings from the `setting` section of a PyRadiomics parameter file (its names, its units).

    Raises:
        ValueError: an unknown setting, a malformed value, or a setting whose effect is not implemented here.
    """
    fields = {f.name for f in dataclasses.fields(Settings)}
    kwargs = {}
    for name, value in (setting or {}).items():
        if name in _IGNORED:
            continue
        if name in _REFUSED_UNLESS_DEFAULT:
            if value not in (_REFUSED_UNLESS_DEFAULT[name], None):
                raise ValueError(f'setting {name}: {value!r} is not supported (only the default, '
                                 f'{_REFUSED_UNLESS_DEFAULT[name]!r})')
            continue
        if name not in fields:
            raise ValueError(f'unknown setting "{name}"')
        if name == 'interpolator' and value is None:
            continue  # PyRadiomics' "no interpolator" (no resampling) = resampledPixelSpacing None.
        try:
            kwargs[name] = _convert(name, value)
        except (TypeError, ValueError) as e:
            raise ValueError(f'setting {name}: {e}') from None
    if setting and setting.get('interpolator', 'x') is None:
        kwargs['resampledPixelSpacing'] = None  # PyRadiomics resamples only when both are given.
    return Settings(**kwargs)


def read_params(path: str) -> tuple[Settings, dict[str, list[str] | None] | None]:
    """Read a PyRadiomics parameter file (YAML or JSON).

    Returns:
        (settings, feature_classes): feature_classes maps a class name to its enabled feature names (None or an
        empty list: all of them), or is None when the file has no featureClass section.

    Raises:
        ValueError: unreadable or malformed file, unknown or unsupported settings, a filtered image type.
    """
    try:
        with open(path, encoding='utf-8') as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f'cannot read parameter file {path}: {e.strerror or e}') from None
    params = _parse(text, path)
    if not isinstance(params, dict):
        raise ValueError(f'parameter file {path} must hold a mapping with a "setting" section')
    unknown = set(params) - {'setting', 'imageType', 'featureClass', 'voxelSetting'}
    if unknown:
        raise ValueError(f'parameter file {path}: unknown section "{sorted(unknown)[0]}"')
    image_types = params.get('imageType') or {'Original': {}}
    if set(image_types) != {'Original'} or image_types.get('Original'):
        raise ValueError(f'parameter file {path}: only imageType Original without custom settings is supported, '
                         f'got {sorted(image_types)}')
    try:
        settings = settings_from_dict(params.get('setting'))
    except ValueError as e:
        raise ValueError(f'parameter file {path}: {e}') from None
    classes = params.get('featureClass')
    if classes is not None:
        if not isinstance(classes, dict):
            raise ValueError(f'parameter file {path}: featureClass must map class names to feature lists')
        classes = {str(k): (list(v) if v else None) for k, v in classes.items()}
    return settings, classes


def _parse(text: str, path: str) -> Any:
    """JSON for .json files, YAML (a superset of JSON) otherwise."""
    if path.lower().endswith('.json'):
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f'parameter file {path} is not valid JSON ({e})') from None
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        detail = ' '.join(str(e).split())
        raise ValueError(f'parameter file {path} is not valid YAML ({detail})') from None


def describe(settings: Settings) -> str:
    """A one-line summary for logs: only the settings that differ from PyRadiomics' defaults."""
    default = Settings()
    changed = {k: v for k, v in settings.to_dict().items() if v != default.to_dict()[k]}
    return 'PyRadiomics defaults' if not changed else ', '.join(f'{k}={v}' for k, v in changed.items())
