# SPDX-License-Identifier: Apache-2.0
"""Extraction settings with PyRadiomics' names, defaults and meaning, and its parameter files (YAML or JSON).

A parameter file has up to four sections: `setting` (read here), `imageType` (the images features are computed
from: `Original`, `LoG` with its `sigma` list, `Wavelet` with `wavelet`, `level`, `start_level`; see filters.py),
`featureClass` (which classes and features to compute) and `voxelSetting` (voxel-based extraction, which this
module does not do, so it is ignored). The filter parameters may also stand in `setting`, as defaults for the image
types that do not set them (PyRadiomics merges the two). Settings of filters not implemented here (LBP, gradient)
are accepted and ignored, and those image types are refused; settings that would change the values in a way this
module does not implement (force2D, resegmentRange, a mask channel, other settings per image type) are refused with
an error.
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
IMAGE_TYPES = ('Original', 'LoG', 'Wavelet')  # PyRadiomics' image types implemented here (filters.py).
FILTER_SETTINGS = ('sigma', 'wavelet', 'level', 'start_level')  # Parameters of LoG and Wavelet.

# Settings whose value never changes the original image's features (checks, logging, filter parameters).
_IGNORED = {'additionalInfo', 'geometryTolerance', 'enableCExtensions', 'force2Ddimension', 'resegmentShape',
            'gradientUseSpacing', 'lbp2DRadius', 'lbp2DSamples', 'lbp2DMethod', 'lbp3DLevels', 'lbp3DIcosphereRadius',
            'lbp3DIcosphereSubdivision', *FILTER_SETTINGS}
# Settings that change values in ways not implemented here: refused unless they hold the default.
_REFUSED_UNLESS_DEFAULT = {'force2D': False, 'resegmentRange': None, 'resegmentMode': 'absolute', 'label_channel': 0}

#----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ImageType:
    """One of PyRadiomics' image types with its parameters (PyRadiomics' names and defaults).

    A sigma keeps the type it was written with: PyRadiomics names the image after str(sigma), so 2 gives
    `log-sigma-2-mm-3D` and 2.0 gives `log-sigma-2-0-mm-3D`.
    """
    name: str                                # 'Original', 'LoG' or 'Wavelet'.
    sigma: tuple[float, ...] = ()            # LoG: Gaussian widths in mm, one image each.
    wavelet: str = 'coif1'                   # Wavelet: a PyWavelets wavelet name.
    level: int = 1                           # Wavelet: decomposition levels that give features.
    start_level: int = 0                     # Wavelet: levels applied (approximation only) before those.

    def __post_init__(self) -> None:
        if self.name not in IMAGE_TYPES:
            raise ValueError(f'imageType {self.name} is not supported (only {", ".join(IMAGE_TYPES)})')
        if self.name == 'LoG' and (not self.sigma or any(not s > 0 for s in self.sigma)):
            raise ValueError(f'imageType LoG needs sigma: a list of widths > 0 in mm, got {list(self.sigma)}')
        if self.level < 1 or self.start_level < 0:
            raise ValueError(f'imageType Wavelet: level must be >= 1 and start_level >= 0, got {self.level} and '
                             f'{self.start_level}')
        if self.name == 'Wavelet':
            import pywt
            if self.wavelet not in pywt.wavelist(kind='discrete'):
                raise ValueError(f'imageType Wavelet: "{self.wavelet}" is not a discrete PyWavelets wavelet '
                                 f'(e.g. coif1, haar, db2)')

    def to_dict(self) -> dict[str, Any]:
        """PyRadiomics' custom arguments of the image type (only those it reads)."""
        if self.name == 'LoG':
            return {'sigma': list(self.sigma)}
        if self.name == 'Wavelet':
            return {'wavelet': self.wavelet, 'level': self.level, 'start_level': self.start_level}
        return {}


ORIGINAL = (ImageType('Original'),)


def image_types_from_dict(image_types: dict[str, Any] | None, setting: dict[str, Any] | None) -> tuple[ImageType, ...]:
    """The `imageType` section of a parameter file (None or empty: Original), with filter parameters taken from
    each image type's own arguments, else from the `setting` section, else PyRadiomics' defaults.

    Raises:
        ValueError: an image type not implemented here, a malformed parameter, or another setting per image type.
    """
    if not image_types:
        return ORIGINAL
    if not isinstance(image_types, dict):
        raise ValueError('imageType must map image type names to their settings')
    defaults = {k: v for k, v in (setting or {}).items() if k in FILTER_SETTINGS}
    out = []
    for name, custom in image_types.items():
        if name not in IMAGE_TYPES:
            raise ValueError(f'imageType {name} is not supported (only {", ".join(IMAGE_TYPES)})')
        if custom is not None and not isinstance(custom, dict):
            raise ValueError(f'imageType {name}: its settings must be a mapping, got {custom!r}')
        args = dict(defaults, **(custom or {}))
        other = sorted(set(custom or {}) - set(FILTER_SETTINGS))
        if other:
            raise ValueError(f'imageType {name}: per-image-type setting "{other[0]}" is not supported (only '
                             f'{", ".join(FILTER_SETTINGS)}; put other settings in the setting section)')
        try:
            if name == 'LoG':
                sigma = args.get('sigma') or []
                out.append(ImageType(name, sigma=tuple(_number(v) for v in (
                    sigma if isinstance(sigma, (list, tuple)) else [sigma]))))
            elif name == 'Wavelet':
                out.append(ImageType(name, wavelet=str(args.get('wavelet', 'coif1')),
                                     level=_integer(args.get('level', 1)),
                                     start_level=_integer(args.get('start_level', 0))))
            else:
                out.append(ImageType(name))
        except (TypeError, ValueError) as e:
            raise ValueError(str(e) if str(e).startswith('imageType') else f'imageType {name}: {e}') from None
    return tuple(out)


def _number(value: Any) -> float:
    """A number as written (int or float: it names the LoG image)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f'sigma must be numbers, got {value!r}')
    return value


def _integer(value: Any) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f'{value!r} is not an integer')
    return int(value)

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
    padDistance: int = 5                                # Voxels kept around the ROI when resampling or pre-cropping
                                                        # (the context the filters see).
    preCrop: bool = False                               # Without resampling: crop to the ROI plus padDistance first.
    correctMask: bool = False                           # A mask on another grid: resample it onto the image's.
    label: int = 1                                      # Mask value of the region of interest.
    normalize: bool = False                             # Z-score the whole image before anything else.
    normalizeScale: float = 1.0                         # Multiply the z-scores by this.
    removeOutliers: float | None = None                 # Clip z-scores at +-this many standard deviations.
    minimumROIDimensions: int = 2                       # Axes along which the ROI must span more than one voxel.
    minimumROISize: int | None = None                   # Refuse ROIs with at most this many voxels.
    gldm_a: float = 0.0                                 # GLDM: neighbours within this gray-level distance depend.
    symmetricalGLCM: bool = True                        # Count each GLCM pair in both orders.
    weightingNorm: str | None = None                    # Weight GLCM/GLRLM angles by distance, then merge them.
    imageType: tuple[ImageType, ...] = ORIGINAL         # The images features are computed from (PyRadiomics order).

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
        names = [t.name for t in self.imageType]
        if not names or len(set(names)) != len(names):
            raise ValueError(f'imageType must name each image type once, got {names}')

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-friendly dict with PyRadiomics' names."""
        out = dataclasses.asdict(self)
        out['distances'] = list(self.distances)
        if self.resampledPixelSpacing is not None:
            out['resampledPixelSpacing'] = list(self.resampledPixelSpacing)
        out['imageType'] = {t.name: t.to_dict() for t in self.imageType}
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
    if name in ('normalize', 'symmetricalGLCM', 'preCrop', 'correctMask'):
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


def settings_from_dict(setting: dict[str, Any] | None, image_types: dict[str, Any] | None = None) -> Settings:
    """Settings from the `setting` section of a PyRadiomics parameter file (its names, its units), and its
    `imageType` section (None: Original only).

    Raises:
        ValueError: an unknown setting, a malformed value, or a setting whose effect is not implemented here.
    """
    fields = {f.name for f in dataclasses.fields(Settings)} - {'imageType'}
    kwargs: dict[str, Any] = {'imageType': image_types_from_dict(image_types, setting)}
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
        ValueError: unreadable or malformed file, unknown or unsupported settings or image types.
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
    try:
        settings = settings_from_dict(params.get('setting'), params.get('imageType'))
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
    if 'imageType' in changed:
        changed['imageType'] = '+'.join(t.name for t in settings.imageType)
    return 'PyRadiomics defaults' if not changed else ', '.join(f'{k}={v}' for k, v in changed.items())
