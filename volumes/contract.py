# SPDX-License-Identifier: Apache-2.0
"""The volume contract: the one place that knows how a volume is laid out, what its values mean and where it sits.

Axis order. Arrays and tensors are [..., D, H, W], D being the slice axis. Volumes packed by dataset_tool.py have
their axes permuted and flipped towards LPS, so D runs towards the patient's superior, H towards posterior and W
towards the patient's left. Everything the command line and ITK write per axis (sizes, spacings, factors, origins)
is (x, y, z) = (W, H, D): `256x256x24` is W=256, H=256, D=24. The conversions between the two orders are here and
nowhere else: parse_size / format_size for `XxYxZ` text, xyz_to_dhw / dhw_to_xyz for sequences.

Intensity. A packed volume stores integers (uint8 or uint16); the networks see floats in [-1, 1]. to_unit and
from_unit convert between the two. IntensityMapping says how the stored integers came from the source values: a
per-volume percentile clip (not invertible) or a fixed window in source units such as Hounsfield units (invertible,
so generated volumes can be written back in those units).

Geometry. VolumeInfo is the frozen record that travels from dataset.json into the generator's constructor, so every
snapshot and safe export carries it: voxel spacing, direction cosines, the world position of the grid's centre, the
stored dtype, the intensity mapping, and the channel and label names.

Light on purpose (NumPy only): command-line tools import it for their option lists.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

WRITE_FORMATS = ('nii.gz', 'nii', 'nrrd', 'npy')  # What generated volumes can be written as.
STORED_DTYPES = {'uint8': 255, 'uint16': 65535}    # Stored dtype -> its largest value.
LPS_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
ORIENTS = ('source', 'lps')                         # How the packer lays out the voxels (VolumeInfo.orient).
INTERPOLATIONS = ('linear', 'bspline', 'nearest')   # The packer's image interpolators.

#----------------------------------------------------------------------------
# Axis order.


def parse_size(text: str) -> tuple[int, int, int]:
    """'XxYxZ' text (e.g. '256x256x24') -> a (D, H, W) shape.

    Raises:
        ValueError: unless the text is three positive integers separated by 'x'.
    """
    match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*[xX]\s*(\d+)\s*', str(text))
    if match is None or any(int(v) <= 0 for v in match.groups()):
        raise ValueError(f'"{text}": expected XxYxZ (W x H x D) with three positive integers, e.g. 256x256x24')
    return xyz_to_dhw(int(v) for v in match.groups())


def format_size(shape_dhw: Sequence[int]) -> str:
    """A (D, H, W) shape (or [C, D, H, W]: the last three) as 'XxYxZ' text, the inverse of parse_size."""
    return 'x'.join(str(int(s)) for s in dhw_to_xyz(list(shape_dhw)[-3:]))


def xyz_to_dhw(values: Sequence[Any]) -> tuple:
    """Per-axis values in (x, y, z) order -> (D, H, W) order. An array [..., 3] of such triples (e.g. voxel
    indices, one per row) is converted row by row."""
    if isinstance(values, np.ndarray) and values.ndim > 1:
        return _triples_reversed(values)
    values = tuple(values)
    if len(values) != 3:
        raise ValueError(f'expected three values (x, y, z), got {values!r}')
    return values[::-1]


def dhw_to_xyz(values: Sequence[Any]) -> tuple:
    """Per-axis values in (D, H, W) order -> (x, y, z) order (an array [..., 3] of triples: row by row)."""
    if isinstance(values, np.ndarray) and values.ndim > 1:
        return _triples_reversed(values)
    values = tuple(values)
    if len(values) != 3:
        raise ValueError(f'expected three values (D, H, W), got {values!r}')
    return values[::-1]


#----------------------------------------------------------------------------
# Geometry: where a grid sits in the world.


def centre_offset(size_xyz: Sequence[int], spacing_xyz: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """World vector (mm) from the first voxel of a grid to its centre: direction @ ((size - 1) / 2 * spacing)."""
    half = (np.asarray(size_xyz, dtype=np.float64) - 1) / 2 * np.asarray(spacing_xyz, dtype=np.float64)
    return np.reshape(np.asarray(direction, dtype=np.float64), (3, 3)) @ half


def origin_of(centre: Sequence[float], size_xyz: Sequence[int], spacing_xyz: Sequence[float],
              direction: Sequence[float]) -> np.ndarray:
    """World position (mm) of the first voxel of a grid whose centre is at `centre`."""
    return np.asarray(centre, dtype=np.float64) - centre_offset(size_xyz, spacing_xyz, direction)


def centre_of(origin: Sequence[float], size_xyz: Sequence[int], spacing_xyz: Sequence[float],
              direction: Sequence[float]) -> np.ndarray:
    """World position (mm) of the centre of a grid whose first voxel is at `origin`."""
    return np.asarray(origin, dtype=np.float64) + centre_offset(size_xyz, spacing_xyz, direction)

#----------------------------------------------------------------------------
# Display: upright planes.

PLANES = ('axial', 'coronal', 'sagittal')


def upright_slice(volume, plane: str):
    """The middle slice of `plane` from a volume [..., D, H, W] (axes towards S, P and L, as packed), upright in the
    radiological display: axial [..., H, W] at D // 2 (anterior at the top, the patient's left on the right);
    coronal [..., D, W] at H // 2 and sagittal [..., D, H] at W // 2, both with the head at the top (D flipped).
    Works on NumPy arrays and torch tensors."""
    D, H, W = volume.shape[-3:]
    if plane == 'axial':
        return volume[..., D // 2, :, :]
    if plane == 'coronal':
        picked = volume[..., :, H // 2, :]
    elif plane == 'sagittal':
        picked = volume[..., :, :, W // 2]
    else:
        raise ValueError(f'Unknown plane "{plane}"; expected one of {PLANES}')
    return np.flip(picked, axis=-2) if isinstance(picked, np.ndarray) else picked.flip(-2)


def plane_pixel_mm(spacing_xyz: Sequence[float], plane: str) -> tuple[float, float]:
    """(row, column) pixel size in mm of an upright slice of `plane` (upright_slice) for a voxel spacing (x, y, z)."""
    sx, sy, sz = (float(s) for s in spacing_xyz)
    return dict(axial=(sy, sx), coronal=(sz, sx), sagittal=(sz, sy))[plane]


def _triples_reversed(array: np.ndarray) -> np.ndarray:
    if array.shape[-1] != 3:
        raise ValueError(f'expected rows of three values, got an array of shape {array.shape}')
    return array[..., ::-1]


def as_xyz(value: int | Sequence[int], name: str) -> tuple[int, int, int]:
    """An int or an (x, y, z) sequence of positive ints as an (x, y, z) tuple (per-axis factors of the ops)."""
    values = (int(value),) * 3 if np.isscalar(value) else tuple(int(v) for v in value)
    if len(values) != 3 or min(values) < 1:
        raise ValueError(f'{name}: expected a positive int or three positive ints (x, y, z), got {value!r}')
    return values


def divide_shape(shape_dhw: Sequence[int], factors_xyz: Sequence[int]) -> tuple[int, int, int]:
    """A (D, H, W) shape divided by per-axis factors given in (x, y, z) order."""
    return tuple(int(s) // int(f) for s, f in zip(shape_dhw, xyz_to_dhw(factors_xyz)))


def parse_xyz(text: str, what: str, integer: bool = False, minimum: float = 0) -> tuple:
    """'a,b,c' (or one number for all three axes) -> (x, y, z) numbers greater than `minimum`.

    Raises:
        ValueError: naming `what` and the expected form.
    """
    parts = [p.strip() for p in str(text).split(',')]
    parts = parts * 3 if len(parts) == 1 else parts
    try:
        numbers = tuple(int(p) if integer else float(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) != 3 or not all(np.isfinite(numbers)) or min(numbers) <= minimum:
        kind = 'integers' if integer else 'numbers'
        raise ValueError(f'{what} "{text}": expected three {kind} x,y,z (or one for all axes) above {minimum:g}')
    return numbers

#----------------------------------------------------------------------------
# Intensity.


def max_value(dtype: str) -> int:
    """The largest stored value of a stored dtype: 255 for uint8, 65535 for uint16."""
    try:
        return STORED_DTYPES[str(dtype)]
    except KeyError:
        raise ValueError(f'stored dtype "{dtype}": expected one of {", ".join(STORED_DTYPES)}') from None


def to_unit(stored: Any, max_value: float) -> Any:
    """Stored integers [0, max_value] (NumPy or torch) -> float32 in [-1, 1]."""
    return stored.astype(np.float32) * np.float32(2 / max_value) - 1 if isinstance(stored, np.ndarray) else \
        stored.float() * (2 / max_value) - 1


def from_unit(volume: np.ndarray, dtype: str) -> np.ndarray:
    """Floats in about [-1, 1] -> the stored integers of dtype (clipped, rounded): the inverse of to_unit."""
    top = max_value(dtype)
    return np.rint((np.asarray(volume, dtype=np.float32) + 1) * np.float32(top / 2)).clip(0, top).astype(dtype)


@dataclasses.dataclass(frozen=True)
class IntensityMapping:
    """How stored integers came from the source values.

    kind 'percentile': each volume (and channel) was clipped to its own lo and hi percentiles and scaled to the
    dtype's range; the source units cannot be recovered. kind 'window': every volume was clipped to the fixed
    window [lo, hi] in source units (e.g. Hounsfield units for CT) and scaled linearly, so
    source = lo + stored / max_value * (hi - lo).
    """
    kind: str = 'percentile'
    lo: float = 0.5
    hi: float = 99.5
    dtype: str = 'uint8'

    def __post_init__(self) -> None:
        if self.kind not in ('percentile', 'window'):
            raise ValueError(f'intensity mapping "{self.kind}": expected "percentile" or "window"')
        max_value(self.dtype)
        if not (np.isfinite(self.lo) and np.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError(f'intensity {self.kind} {self.lo:g},{self.hi:g}: expected finite lo < hi')
        if self.kind == 'percentile' and not 0 <= self.lo < self.hi <= 100:
            raise ValueError(f'percentiles {self.lo:g},{self.hi:g}: expected 0 <= lo < hi <= 100')

    @property
    def invertible(self) -> bool:
        """True when stored values can be turned back into source units (a fixed window)."""
        return self.kind == 'window'

    def to_stored(self, array: np.ndarray, name: str) -> np.ndarray:
        """Source values (one channel) -> the stored integers. Raises ValueError naming `name` for non-finite
        values or a volume with no contrast between its percentiles."""
        array = np.asarray(array, dtype=np.float32)
        if not np.all(np.isfinite(array)):
            raise ValueError(f'{name} has NaN or infinite voxels')
        if self.kind == 'percentile':
            lo, hi = np.percentile(array, (self.lo, self.hi))
            if not hi > lo:
                raise ValueError(f'{name} has constant intensity between the {self.lo:g} and {self.hi:g} '
                                 f'percentiles')
        else:
            lo, hi = self.lo, self.hi
        top = max_value(self.dtype)
        scaled = np.clip((array - np.float32(lo)) * np.float32(top / (hi - lo)), 0, top)
        return np.rint(scaled).astype(self.dtype)

    def to_source(self, stored: np.ndarray) -> np.ndarray:
        """Stored integers -> float32 source units (window mappings only)."""
        if not self.invertible:
            raise ValueError('a percentile-clipped volume cannot be turned back into source units')
        return (np.asarray(stored, dtype=np.float32) * np.float32((self.hi - self.lo) / max_value(self.dtype))
                + np.float32(self.lo))

    def to_dict(self) -> dict:
        return dict(kind=self.kind, lo=float(self.lo), hi=float(self.hi), dtype=self.dtype)

#----------------------------------------------------------------------------
# Label maps: stored integers <-> one-hot channels in [-1, 1] (the form the networks generate them in).


def labels_to_unit(labels: Any, values: Sequence[int]) -> Any:
    """Label maps [N, D, H, W] (NumPy or torch integers) -> one-hot [N, K, D, H, W] float32 in {-1, 1}, one channel
    per value of `values` (background first); a value not in `values` gets no channel set."""
    if isinstance(labels, np.ndarray):
        return np.stack([labels == v for v in values], axis=1).astype(np.float32) * 2 - 1
    import torch
    return torch.stack([labels == v for v in values], dim=1).float() * 2 - 1


def unit_to_labels(channels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """One-hot-like channels [K, D, H, W] (any real values) -> the label map [D, H, W]: the value of the largest
    channel, as uint8 (uint16 above 255)."""
    dtype = np.uint8 if max(values) <= 255 else np.uint16
    return np.asarray(values, dtype=dtype)[np.argmax(np.asarray(channels), axis=0)]

def to_network(stored: Any, info: VolumeInfo) -> Any:
    """Stored volumes [N, C(+1), D, H, W] (NumPy or torch; with label maps, the map is channel C) -> the networks'
    [N, info.num_channels, D, H, W] float32: image channels by to_unit, the label map as one-hot channels."""
    C = len(info.channels)
    image = to_unit(stored[:, :C], info.max_value)
    if not info.label_values:
        return image
    labels = labels_to_unit(stored[:, C].astype(np.int64) if isinstance(stored, np.ndarray) else stored[:, C].long(),
                            info.label_values)
    if isinstance(stored, np.ndarray):
        return np.concatenate([image, labels], axis=1)
    import torch
    return torch.cat([image, labels], dim=1)


def from_network(volume: np.ndarray, info: VolumeInfo) -> tuple[np.ndarray, np.ndarray | None]:
    """One network volume [info.num_channels, D, H, W] -> (image [C, D, H, W] in [-1, 1], label map [D, H, W] or
    None): the label channels' argmax as label values."""
    C = len(info.channels)
    labels = unit_to_labels(volume[C:], info.label_values) if info.label_values else None
    return volume[:C], labels

#----------------------------------------------------------------------------
# Geometry.

_AXIS_LETTERS = (('L', 'R'), ('P', 'A'), ('S', 'I'))  # LPS world: +x left, +y posterior, +z superior.


def orientation_code(direction: Sequence[float]) -> str:
    """The three-letter DICOM code (LPS convention) the axes of a direction matrix point closest to, e.g. 'LPS'."""
    matrix = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    code = ''
    for column in matrix.T:  # The x, y, z axes of the volume.
        world = int(np.argmax(np.abs(column)))
        code += _AXIS_LETTERS[world][0 if column[world] > 0 else 1]
    return code


def _rotation(direction: Sequence[float], name: str) -> tuple[float, ...]:
    values = tuple(float(d) for d in direction)
    matrix = np.reshape(values, (3, 3)) if len(values) == 9 else None
    if matrix is None or not np.allclose(matrix.T @ matrix, np.eye(3), atol=1e-4):
        raise ValueError(f'{name}: expected 9 direction cosines forming an orthonormal matrix (row-major), '
                         f'got {direction!r}')
    return values


@dataclasses.dataclass(frozen=True)
class VolumeInfo:
    """What a volume's voxels and values mean: the record every network carries (see the module docstring).

    Attributes:
        spacing: voxel size (x, y, z) in mm.
        direction: 9 direction cosines, row-major, whose columns are the x, y, z axes in LPS world space.
        centre: world position (LPS, mm) of the centre of the packed grid; generated volumes are placed there.
        intensity: how stored integers relate to source values; its dtype is the stored dtype.
        channels: one name per channel (MR sequence).
        label_names: names of the segmentation labels, {value: name} (background 0 is implied); None: the
            volumes carry no label maps.
        orient: how the packer laid the voxels out: 'source' (along the source's own axes, permuted and flipped
            towards LPS, keeping an oblique tilt in `direction`) or 'lps' (resampled onto the world's axes).
        interpolation: the image interpolator of the packer ('linear', 'bspline' or 'nearest').
    """
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    direction: tuple[float, ...] = LPS_DIRECTION
    centre: tuple[float, float, float] = (0.0, 0.0, 0.0)
    intensity: IntensityMapping = IntensityMapping()
    channels: tuple[str, ...] = ('image',)
    label_names: dict[int, str] | None = None
    orient: str = 'source'
    interpolation: str = 'linear'

    def __post_init__(self) -> None:
        spacing = tuple(float(s) for s in self.spacing)
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(f'spacing: expected three positive sizes in mm (x, y, z), got {self.spacing!r}')
        centre = tuple(float(c) for c in self.centre)
        if len(centre) != 3 or not all(np.isfinite(centre)):
            raise ValueError(f'centre: expected three finite coordinates in mm (x, y, z), got {self.centre!r}')
        object.__setattr__(self, 'spacing', spacing)
        object.__setattr__(self, 'centre', centre)
        object.__setattr__(self, 'direction', _rotation(self.direction, 'direction'))
        object.__setattr__(self, 'channels', tuple(str(c) for c in self.channels))
        if self.label_names is not None:
            object.__setattr__(self, 'label_names', {int(k): str(v) for k, v in self.label_names.items()})
        if self.orient not in ORIENTS:
            raise ValueError(f'orient "{self.orient}": expected one of {", ".join(ORIENTS)}')
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f'interpolation "{self.interpolation}": expected one of {", ".join(INTERPOLATIONS)}')

    @property
    def dtype(self) -> str:
        """The stored dtype, 'uint8' or 'uint16'."""
        return self.intensity.dtype

    @property
    def max_value(self) -> int:
        return max_value(self.dtype)

    @property
    def orientation(self) -> str:
        return orientation_code(self.direction)

    @property
    def label_values(self) -> tuple[int, ...]:
        """The label map's values, background 0 first: one network channel each (empty without label maps)."""
        return (0, *sorted(self.label_names)) if self.label_names is not None else ()

    @property
    def num_channels(self) -> int:
        """Channels of the network's volumes: the image channels, then one per label value (one-hot)."""
        return len(self.channels) + len(self.label_values)

    def origin(self, shape_dhw: Sequence[int]) -> tuple[float, float, float]:
        """World position (mm) of the first voxel of a [D, H, W] grid centred at `centre`."""
        return tuple(float(v) for v in origin_of(self.centre, dhw_to_xyz(shape_dhw), self.spacing, self.direction))

    def to_dict(self) -> dict:
        """A JSON-able dict (what the generator's constructor and the safe export keep)."""
        return dict(spacing=list(self.spacing), direction=list(self.direction), centre=list(self.centre),
                    orientation=self.orientation, intensity=self.intensity.to_dict(), channels=list(self.channels),
                    label_names={str(k): v for k, v in self.label_names.items()} if self.label_names is not None
                    else None,
                    orient=self.orient, interpolation=self.interpolation)

    @classmethod
    def from_dict(cls, record: dict) -> VolumeInfo:
        """The inverse of to_dict; raises ValueError (naming the field) for a malformed record."""
        try:
            intensity = IntensityMapping(**record.get('intensity', {}))
            return cls(spacing=record['spacing'], direction=record.get('direction', LPS_DIRECTION),
                       centre=record.get('centre', (0.0, 0.0, 0.0)), intensity=intensity,
                       channels=record.get('channels') or ('image',), label_names=record.get('label_names'),
                       orient=record.get('orient', 'source'), interpolation=record.get('interpolation', 'linear'))
        except (KeyError, TypeError) as e:
            raise ValueError(f'a malformed volume record ({type(e).__name__}: {e})') from None

    @classmethod
    def from_dataset_json(cls, info: dict) -> VolumeInfo:
        """The record of a packed dataset. dataset.json files written before the record existed give spacing,
        direction, dtype and clip percentiles only: their volumes were centred at the world origin."""
        if 'volume_info' in info:
            return cls.from_dict(info['volume_info'])
        lo, hi = info.get('clip_percentiles', (0.5, 99.5))
        return cls(spacing=info.get('spacing', (1.0, 1.0, 1.0)), direction=info.get('direction', LPS_DIRECTION),
                   intensity=IntensityMapping('percentile', lo, hi, str(info.get('dtype', 'uint8'))),
                   channels=info.get('channels') or ('image',))

    def describe(self) -> str:
        """One line for notes: spacing, orientation, centre, stored dtype and intensity."""
        spacing = 'x'.join(f'{s:g}' for s in self.spacing)
        centre = ', '.join(f'{c:g}' for c in self.centre)
        intensity = (f'window {self.intensity.lo:g}..{self.intensity.hi:g}' if self.intensity.invertible else
                     f'percentiles {self.intensity.lo:g}..{self.intensity.hi:g}')
        return (f'{spacing} mm, {self.orientation}, centred at ({centre}) mm, {self.dtype}, {intensity}')
