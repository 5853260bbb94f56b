# SPDX-License-Identifier: Apache-2.0
"""Reading, reorienting, resampling and writing medical volumes (NIfTI, NRRD, MetaImage, DICOM series, .npy).

Geometry follows ITK: a volume is a SimpleITK image whose size, spacing and origin are (x, y, z) and whose
direction is 9 floats, the 3x3 matrix in row-major order with the x, y, z axes as its columns, in LPS world
coordinates (mm). Its numpy array is [D, H, W] = [z, y, x].

The canonical orientation is LPS (DICOM convention: x runs towards the patient's left, y towards posterior, z
towards superior), so a canonical volume has the identity direction and an axial slice [H, W] shows anterior at
the top and the patient's left on the right (the radiological view). Reorienting only permutes and flips axes
(no interpolation): an oblique acquisition keeps its tilt in its direction cosines, which the packer records
(volumes/packing.py), or resamples away physically when asked (axis_aligned).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import re
import sys
import threading
import zlib
from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

import dnnlib
from volumes.contract import LPS_DIRECTION, centre_of, origin_of, xyz_to_dhw

CANONICAL_ORIENTATION = 'LPS'
INTERPOLATORS = {'linear': sitk.sitkLinear, 'bspline': sitk.sitkBSpline, 'nearest': sitk.sitkNearestNeighbor}
READ_EXTENSIONS = ('.nii.gz', '.nii', '.nrrd', '.nhdr', '.mha', '.mhd', '.npy')
WRITE_EXTENSIONS = ('.nii.gz', '.nii', '.nrrd', '.mha', '.npy')

#----------------------------------------------------------------------------
# File types.


def volume_extension(path: str) -> str | None:
    """The volume extension of path (one of READ_EXTENSIONS, lower case), or None."""
    lower = str(path).lower()
    return next((ext for ext in READ_EXTENSIONS if lower.endswith(ext)), None)


def strip_extension(name: str) -> str:
    """File name without its volume extension ('case1.nii.gz' -> 'case1'); other names lose their last suffix."""
    ext = volume_extension(name) or os.path.splitext(name)[1]
    return name[:len(name) - len(ext)] if ext else name


def is_dicom_file(path: str) -> bool:
    """True for .dcm files and for files carrying the DICOM preamble magic 'DICM' at byte 128."""
    if path.lower().endswith('.dcm'):
        return True
    try:
        with open(path, 'rb') as f:
            return f.read(132)[128:] == b'DICM'
    except OSError:
        return False


def sitk_error_message(error: Exception) -> str:
    """A one-line version of a SimpleITK/ITK exception message (which spans several lines with source paths)."""
    text = str(error)
    match = re.search(r'(?:ITK ERROR|itk::ERROR|sitk::ERROR):\s*(.*)', text, flags=re.S)
    text = match.group(1) if match else text
    text = re.sub(r'^\w+\(0x[0-9a-f]+\):\s*', '', text.strip())  # Drop the "ClassName(0x55e1...): " prefix.
    text = text.replace('Reason: No such file or directory', '')  # A stale errno after a short read.
    if '[nrrd]' in text:  # teem's chain of callers, innermost last: keep the innermost reason.
        text = re.sub(r'^\w+: ', '', text.rsplit('[nrrd]', 1)[1].strip())
    if 'Unable to determine ImageIO reader' in text:
        text = 'no reader recognises its header (is it a volume file?)'
    return ' '.join(text.split()) or type(error).__name__

#----------------------------------------------------------------------------
# Reading.


def _check_nifti_complete(path: str) -> None:
    """ITK reads a truncated NIfTI silently (zeros for the missing part), so compare the data size to the header."""
    import nibabel as nib
    try:
        image = nib.load(path)
        header = image.header
        # The image's header is a copy whose vox_offset nibabel resets to 0; the data object keeps the file's.
        expected = int(image.dataobj.offset) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        if path.lower().endswith('.gz'):
            actual = 0
            with gzip.open(path, 'rb') as f:
                while chunk := f.read(1 << 22):
                    actual += len(chunk)
        else:
            actual = os.path.getsize(path)
    except EOFError:
        raise ValueError(f'{path} is truncated: the compressed stream ends early') from None
    except (zlib.error, gzip.BadGzipFile) as e:  # A garbled deflate stream or a CRC mismatch.
        raise ValueError(f'{path} is corrupt: the compressed stream cannot be decompressed ({e})') from None
    except Exception as e:  # nibabel's header errors derive from Exception directly; name the file whatever it is.
        raise ValueError(f'cannot read {path}: {dnnlib.util.one_line(e)}') from None
    if actual < expected:
        raise ValueError(f'{path} is truncated: {actual} bytes, its header needs {expected}')
    if header.get_data_dtype().kind == 'f':  # ITK's NIfTI reader turns NaN into 0 without a word: look first.
        _check_finite(np.asanyarray(image.dataobj), path)


def _check_finite(array: np.ndarray, name: str) -> None:
    if array.dtype.kind in 'fc' and not np.all(np.isfinite(array)):
        count = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f'{name} has {count} NaN or infinite voxel(s); expected finite intensities (fill or mask '
                         f'them before use)')


def _check_detached_data(path: str) -> None:
    """A MetaImage (.mhd) or NRRD (.nhdr) header names its data file; ITK prints an uncatchable line to stderr when
    that file is missing, so look first."""
    key = r'ElementDataFile\s*=' if path.lower().endswith(('.mhd', '.mha')) else r'data ?file\s*:'
    try:
        with open(path, 'rb') as f:
            header = f.read(1 << 16).decode('latin-1')
    except OSError as e:
        raise ValueError(f'cannot read {path}: {e.strerror}') from None
    match = re.search(rf'^\s*{key}\s*(.+?)\s*$', header, flags=re.M | re.I)
    if match is None or match.group(1).upper() in ('LOCAL', 'LIST') or match.group(1).upper().startswith('LIST'):
        return
    data_file = os.path.join(os.path.dirname(path), match.group(1))
    if '%' not in data_file and not os.path.isfile(data_file):  # '%d' patterns name several slice files.
        raise ValueError(f'cannot read {path}: its data file {data_file} does not exist')


def _image_from_npy(path: str, allow_channels: bool) -> sitk.Image:
    """A .npy array [D, H, W] (or [C, D, H, W] when allowed) as an image with 1 mm spacing and identity direction."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise ValueError(f'cannot read {path}: {dnnlib.util.one_line(e)}') from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.dtype.kind not in 'uif':
        raise ValueError(f'{path} holds {array.dtype} values; expected a real-valued array')
    if array.dtype == np.float16:
        array = array.astype(np.float32)
    if allow_channels and array.ndim == 4:
        return sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)  # [D, H, W, C]
    if array.ndim != 3:
        raise ValueError(f'{path} is a {array.ndim}D array of shape {array.shape}; expected a 3D volume [D, H, W]')
    return sitk.GetImageFromArray(array)


def check_volume(image: sitk.Image, name: str, allow_channels: bool = False) -> None:
    """Raise ValueError (naming the source) unless image is a non-empty 3D volume (scalar unless allowed)."""
    size = 'x'.join(str(s) for s in image.GetSize())
    if image.GetDimension() != 3:
        raise ValueError(f'{name} is a {image.GetDimension()}D image (size {size}); expected a 3D volume')
    if min(image.GetSize()) == 0:
        raise ValueError(f'{name} is empty (size {size})')
    if min(image.GetSize()) == 1:
        raise ValueError(f'{name} is a 2D image (size {size}); expected a 3D volume')
    if image.GetNumberOfComponentsPerPixel() != 1 and not allow_channels:
        raise ValueError(f'{name} has {image.GetNumberOfComponentsPerPixel()} components per voxel; '
                         f'expected a scalar volume')


def read_image(path: str, allow_channels: bool = False) -> sitk.Image:
    """Read one volume file (NIfTI, NRRD, MetaImage or .npy) as a checked 3D SimpleITK image.

    Args:
        path: The file; .npy arrays are [D, H, W] with 1 mm spacing and identity direction.
        allow_channels: Accept multi-component images ([C, D, H, W] for .npy) instead of raising.

    Returns:
        The image, in its file's orientation.

    Raises:
        ValueError: unreadable, truncated, not 3D, empty, NaN or infinite voxels, or (unless allowed)
            multi-component.
    """
    path = str(path)
    ext = volume_extension(path)
    if ext is None:
        raise ValueError(f'{path} is not a volume file (expected one of {", ".join(READ_EXTENSIONS)})')
    if ext == '.npy':
        image = _image_from_npy(path, allow_channels)
    else:
        if ext in ('.nii', '.nii.gz'):
            _check_nifti_complete(path)
        elif ext in ('.mhd', '.mha', '.nhdr'):
            _check_detached_data(path)
        try:
            image = sitk.ReadImage(path)
        except RuntimeError as e:
            raise ValueError(f'cannot read {path}: {sitk_error_message(e)}') from None
    check_volume(image, path, allow_channels)
    _check_finite(sitk.GetArrayViewFromImage(image), path)
    return image


def find_dicom_series(folder: str) -> list[tuple[str, list[str]]]:
    """The DICOM series directly inside folder, as (SeriesInstanceUID, slice files sorted by position)."""
    with _quiet_itk():
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
        return [(uid, list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))) for uid in sorted(uids)]


def series_of_file(path: str) -> tuple[str, list[str], int]:
    """(SeriesInstanceUID, slice files, series in the folder) of the DICOM series that the file `path` belongs to:
    the slices in its folder that share its UID. One slice is no volume, so a DICOM file stands for its series."""
    folder = os.path.dirname(os.path.abspath(path))
    series = find_dicom_series(folder)
    for uid, files in series:
        if any(os.path.samefile(f, path) for f in files):
            return uid, files, len(series)
    raise ValueError(f'{path} is a DICOM file of no readable series (ITK lists {len(series)} series in {folder}, '
                     f'none with this file)')


def read_dicom_series(files: list[str], name: str | None = None) -> sitk.Image:
    """Read the slices of one DICOM series as a checked 3D image.

    Args:
        files: The series' slice files, sorted by position (as find_dicom_series returns them).
        name: How errors name the series (default: the first file's folder).

    Raises:
        ValueError: unreadable slices, slices of different size or orientation, uneven or missing slices.
    """
    name = name or os.path.dirname(files[0])
    if not files:
        raise ValueError(f'DICOM series {name} has no slices')
    if len(files) > 1:
        _check_slice_geometry(files, name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(files))
    try:
        with _quiet_itk():
            # One file may be a multi-frame volume; a lone single-frame file fails check_volume as 2D.
            image = reader.Execute() if len(files) > 1 else sitk.ReadImage(files[0])
    except RuntimeError as e:
        raise ValueError(f'cannot read DICOM series {name}: {sitk_error_message(e)}') from None
    check_volume(image, name)
    return image


def _check_slice_geometry(files: list[str], name: str) -> None:
    """Slices of one series must share size and orientation and be evenly spaced along the slice normal."""
    positions, layouts = [], set()
    reader = sitk.ImageFileReader()
    for path in files:
        reader.SetFileName(path)
        try:
            reader.ReadImageInformation()
        except RuntimeError as e:
            raise ValueError(f'cannot read DICOM slice {path}: {sitk_error_message(e)}') from None
        layouts.add((reader.GetSize()[:2], tuple(np.round(reader.GetDirection(), 4))))
        positions.append(reader.GetOrigin())
    if len(layouts) > 1:
        raise ValueError(f'DICOM series {name} mixes slices of different size or orientation')
    direction = np.asarray(next(iter(layouts))[1]).reshape(3, 3)
    depth = np.asarray(positions) @ direction[:, 2]  # Position of each slice along the slice normal.
    gaps = np.diff(depth)
    if np.any(np.abs(gaps) < 1e-4) or np.ptp(gaps) > 0.01 * max(abs(float(np.median(gaps))), 1e-3) + 1e-3:
        raise ValueError(f'DICOM series {name} has uneven, duplicate or missing slices '
                         f'(gaps {np.round(gaps.min(), 3)}..{np.round(gaps.max(), 3)} mm)')


@contextlib.contextmanager
def _quiet_itk():
    """Silence ITK's warnings (e.g. GDCM's notes on private tags) for the duration."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def read_any(path: str, allow_channels: bool = False) -> sitk.Image:
    """A volume file, a folder holding exactly one DICOM series, or one DICOM file (standing for its series), as a
    checked 3D image (file orientation)."""
    path = str(path)
    if os.path.isdir(path):
        series = find_dicom_series(path)
        if len(series) != 1:
            raise ValueError(f'{path} holds {len(series)} DICOM series; expected exactly one')
        return read_dicom_series(series[0][1], path)
    if not os.path.isfile(path):
        raise ValueError(f'{path} does not exist')
    if volume_extension(path) is None and is_dicom_file(path):
        uid, files, _ = series_of_file(path)
        return read_dicom_series(files, f'{path} (series {uid})')
    return read_image(path, allow_channels)

#----------------------------------------------------------------------------
# Orientation and resampling.


def reorient(image: sitk.Image, orientation: str = CANONICAL_ORIENTATION) -> sitk.Image:
    """Permute and flip the axes of image so they run towards orientation (DICOM convention); no interpolation."""
    current = sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(image.GetDirection())
    return image if current == orientation else sitk.DICOMOrient(image, orientation)


@dataclasses.dataclass(frozen=True)
class Grid:
    """A voxel grid in world space: size, spacing and origin are (x, y, z); direction is 9 floats (row-major)."""
    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def centre(self) -> np.ndarray:
        """World position (mm) of the grid's centre."""
        return centre_of(self.origin, self.size, self.spacing, self.direction)


def image_grid(image: sitk.Image) -> Grid:
    """The grid of an image."""
    return Grid(tuple(image.GetSize()), tuple(image.GetSpacing()), tuple(image.GetOrigin()),
                tuple(image.GetDirection()))


def target_grid(image: sitk.Image, size: tuple[int, int, int] | None = None,
                spacing: tuple[float, float, float] | None = None,
                fov: tuple[float, float, float] | None = None, centre: np.ndarray | None = None) -> Grid:
    """The output grid for image: same axes and centre, with the requested spacing, field of view and size.

    The physical extent is fov if given, else size * spacing when both are given, else the image's own extent.
    The spacing is extent / size when a size is given (so the last step "resize to the size" is part of the same
    grid), else the requested spacing, else the image's. All (x, y, z), mm.

    Args:
        image: The (reoriented) source image.
        size: Output voxels (x, y, z) or None.
        spacing: Output spacing in mm or None.
        fov: Output field of view (physical centred crop or pad) in mm or None.
        centre: World position (mm) to centre the grid on instead of the image's centre (a crop to a structure).
    """
    src = image_grid(image)
    if fov is not None:
        extent = np.asarray(fov, dtype=np.float64)
    elif size is not None and spacing is not None:
        extent = np.asarray(size) * np.asarray(spacing, dtype=np.float64)
    else:
        extent = np.asarray(src.size) * np.asarray(src.spacing)
    if size is not None:
        out_size = np.asarray(size, dtype=np.int64)
        out_spacing = extent / out_size
    else:
        out_spacing = np.asarray(spacing if spacing is not None else src.spacing, dtype=np.float64)
        out_size = np.maximum(np.rint(extent / out_spacing), 1).astype(np.int64)
    origin = origin_of(src.centre if centre is None else centre, out_size, out_spacing, src.direction)
    return Grid(tuple(int(s) for s in out_size), tuple(float(s) for s in out_spacing),
                tuple(float(o) for o in origin), src.direction)


def axis_aligned(grid: Grid) -> Grid:
    """The grid of the same size, spacing and centre along the world's L, P, S axes (identity direction)."""
    origin = origin_of(grid.centre, grid.size, grid.spacing, LPS_DIRECTION)
    return Grid(grid.size, grid.spacing, tuple(float(c) for c in origin), LPS_DIRECTION)


def same_grid(a: Grid, b: Grid, tol_mm: float = 1e-3) -> bool:
    """True when two grids sample the same points (within tol_mm)."""
    return (a.size == b.size and np.allclose(a.spacing, b.spacing, rtol=1e-6, atol=1e-6)
            and np.allclose(a.origin, b.origin, atol=tol_mm) and np.allclose(a.direction, b.direction, atol=1e-6))


def resample(image: sitk.Image, grid: Grid, default_value: float | None = None, antialias: bool = True,
             interpolation: str = 'linear') -> sitk.Image:
    """Resampling of image onto grid (as float32), with Gaussian anti-aliasing where the grid is coarser.

    Args:
        image: A scalar 3D image.
        grid: The output grid.
        default_value: Value outside the image; None: the image's minimum (the background for MR and CT).
        antialias: Blur along input axes that the output samples more coarsely, with sigma = (factor - 1) / 2
            input voxels, so down-sampling does not alias (not for 'nearest', which must keep the values).
        interpolation: 'linear', 'bspline' (cubic) or 'nearest' (SimpleITK's interpolators).

    Returns:
        A float32 image on grid (the input itself, as float32, when it already lies on grid).
    """
    if interpolation not in INTERPOLATORS:
        raise ValueError(f'interpolation "{interpolation}": expected one of {", ".join(INTERPOLATORS)}')
    image = sitk.Cast(image, sitk.sitkFloat32) if image.GetPixelID() != sitk.sitkFloat32 else image
    if same_grid(image_grid(image), grid):
        return image
    if default_value is None:
        default_value = float(sitk.GetArrayViewFromImage(image).min())
    if antialias and interpolation != 'nearest':
        image = _antialias(image, grid)
    ref = sitk.Image(list(grid.size), sitk.sitkFloat32)
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(grid.direction)
    return sitk.Resample(image, ref, sitk.Transform(), INTERPOLATORS[interpolation], float(default_value),
                         sitk.sitkFloat32)


LABEL_INTERPOLATORS = {'nearest': sitk.sitkNearestNeighbor, 'gaussian': sitk.sitkLabelGaussian}


def resample_labels(labels: sitk.Image, grid: Grid, interpolation: str = 'nearest') -> sitk.Image:
    """A label map onto grid without mixing labels: nearest neighbour, or ITK's label-Gaussian (each label
    blurred on its own, the strongest wins: smoother boundaries when down-sampling). Outside the map: 0."""
    if interpolation not in LABEL_INTERPOLATORS:
        raise ValueError(f'label interpolation "{interpolation}": expected one of {", ".join(LABEL_INTERPOLATORS)}')
    if same_grid(image_grid(labels), grid):
        return labels
    ref = sitk.Image(list(grid.size), labels.GetPixelID())
    ref.SetSpacing(grid.spacing)
    ref.SetOrigin(grid.origin)
    ref.SetDirection(grid.direction)
    return sitk.Resample(labels, ref, sitk.Transform(), LABEL_INTERPOLATORS[interpolation], 0, labels.GetPixelID())


def _antialias(image: sitk.Image, grid: Grid) -> sitk.Image:
    # How far apart output samples are along each input axis: the largest projection of an output step on it.
    cosines = np.abs(np.asarray(image.GetDirection()).reshape(3, 3).T @ np.asarray(grid.direction).reshape(3, 3))
    step = (cosines * np.asarray(grid.spacing)[None, :]).max(axis=1)  # [3] (x, y, z)
    sigma_xyz = np.maximum(step / np.asarray(image.GetSpacing()) - 1, 0) / 2
    if not np.any(sigma_xyz > 0.1):
        return image
    import scipy.ndimage  # Here, not at the top: it costs a third of a second that `--help` need not wait.
    array = scipy.ndimage.gaussian_filter(sitk.GetArrayFromImage(image), sigma=xyz_to_dhw(sigma_xyz), mode='nearest')
    blurred = sitk.GetImageFromArray(array)  # [D, H, W]
    blurred.CopyInformation(image)
    return blurred


def image_to_array(image: sitk.Image) -> np.ndarray:
    """The voxels as float32 [D, H, W] (scalar images) or [C, D, H, W] (multi-component images)."""
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    if image.GetNumberOfComponentsPerPixel() > 1:
        array = np.moveaxis(array, -1, 0)  # [D, H, W, C] -> [C, D, H, W]
    return np.ascontiguousarray(array)


def read_volume_array(path: str, orientation: str = CANONICAL_ORIENTATION) -> np.ndarray:
    """Read a volume file or DICOM series folder as float32 [D, H, W] (or [C, D, H, W]) in the given orientation."""
    image = read_any(path, allow_channels=True)
    if image.GetNumberOfComponentsPerPixel() > 1:
        channels = [reorient(sitk.VectorIndexSelectionCast(image, c), orientation)
                    for c in range(image.GetNumberOfComponentsPerPixel())]
        return np.stack([image_to_array(c) for c in channels])
    return image_to_array(reorient(image, orientation))

#----------------------------------------------------------------------------
# Writing.


def array_to_image(array: np.ndarray, spacing_xyz, direction, origin=None) -> sitk.Image:
    """An image from [D, H, W] (scalar) or [C, D, H, W] (vector) voxels; origin None centres the volume at 0."""
    array = np.asarray(array)
    if array.ndim not in (3, 4) or array.size == 0:
        raise ValueError(f'expected a non-empty [D, H, W] or [C, D, H, W] array, got shape {array.shape}')
    spacing = tuple(float(s) for s in spacing_xyz)
    direction = tuple(float(d) for d in direction)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f'spacing must be three positive numbers (x, y, z) in mm, got {spacing_xyz}')
    if len(direction) != 9 or abs(abs(np.linalg.det(np.reshape(direction, (3, 3)))) - 1) > 1e-3:
        raise ValueError(f'direction must be 9 floats forming a rotation (row-major), got {direction}')
    if array.ndim == 4:
        image = sitk.GetImageFromArray(np.moveaxis(array, 0, -1), isVector=True)  # [D, H, W, C]
    else:
        image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    if origin is None:
        origin = origin_of((0.0, 0.0, 0.0), image.GetSize(), spacing, direction)
    image.SetOrigin(tuple(float(o) for o in origin))
    return image


def write_volume(path: str, array_dhw_or_cdhw: np.ndarray, spacing_xyz, direction, origin=None) -> None:
    """Write a volume atomically and checked: the file is read back and compared before it takes its name.

    Args:
        path: Destination; .nii, .nii.gz, .nrrd or .mha carry the geometry; .npy stores the array as it is.
        array_dhw_or_cdhw: Voxels [D, H, W], or [C, D, H, W] written as a C-component image.
        spacing_xyz: Voxel spacing (x, y, z) in mm.
        direction: 9 floats, row-major, columns are the x, y, z axes in LPS world space.
        origin: World position (mm) of the first voxel; None: the volume's centre sits at the world origin.

    Raises:
        ValueError: a bad extension or geometry (nothing is written).
        dnnlib.util.WriteError: the file could not be written or did not read back the same (e.g. a full disk,
            which SimpleITK does not report for NIfTI); nothing is left behind.
    """
    path = str(path)
    ext = next((e for e in WRITE_EXTENSIONS if path.lower().endswith(e)), None)
    if ext is None:
        raise ValueError(f'cannot write {path}: the extension must be one of {", ".join(WRITE_EXTENSIONS)}')
    array = np.ascontiguousarray(array_dhw_or_cdhw)
    image = array_to_image(array, spacing_xyz, direction, origin)  # Validates the geometry for .npy too.
    said: list[str] = []  # What ITK's C code printed on file descriptor 2 while writing.
    with dnnlib.util.atomic_output(path, verify=lambda tmp: _verify_volume_file(tmp, array, said)) as tmp:
        if ext == '.npy':
            with open(tmp, 'wb') as f:
                np.save(f, array, allow_pickle=False)
        else:
            failure = None
            with native_stderr_captured() as printed:
                try:
                    sitk.WriteImage(image, tmp, useCompression=ext in ('.nrrd', '.mha'))
                except RuntimeError as e:
                    failure = e
            said.extend(printed)
            if failure is not None:
                raise OSError(native_message(said) or sitk_error_message(failure))
    if said:  # The file is whole and checked: what the library said was only a remark; pass it on.
        print('\n'.join(said), file=sys.stderr, flush=True)


def _verify_volume_file(path: str, expected: np.ndarray, said: Sequence[str] = ()) -> None:
    """Read a just-written volume back; raise OSError unless it holds exactly the expected voxels and dtype. said:
    what the writer printed on file descriptor 2, which explains a failure best (NIfTI's 'wrote only N of M
    bytes')."""
    try:
        _check_reads_back(path, expected)
    except OSError as e:
        raise OSError(f'{native_message(said)}; is the disk full?' if native_message(said) else str(e)) from None


def _check_reads_back(path: str, expected: np.ndarray) -> None:
    try:
        if path.lower().endswith('.npy'):
            found = np.load(path, allow_pickle=False)
        else:
            if volume_extension(path) in ('.nii', '.nii.gz'):
                _check_nifti_complete(path)
            found = sitk.GetArrayFromImage(sitk.ReadImage(path))
            if found.ndim == 4:
                found = np.moveaxis(found, -1, 0)  # [D, H, W, C] -> [C, D, H, W]
    except (ValueError, RuntimeError, OSError) as e:
        reason = sitk_error_message(e).replace(f'{path} ', '').replace(path, 'the file')
        raise OSError(f'the file does not read back ({reason}); is the disk full?') from None
    if found.shape != expected.shape or found.dtype != expected.dtype or not np.array_equal(found, expected):
        raise OSError(f'the file reads back as {found.dtype} {list(found.shape)} with other voxels than the '
                      f'{expected.dtype} {list(expected.shape)} written; is the disk full?')

#----------------------------------------------------------------------------
# What C libraries print.

_STDERR_LOCK = threading.Lock()  # File descriptor 2 belongs to the whole process: one capture at a time.


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[list[str]]:
    """Catch what C code prints straight to file descriptor 2 while the block runs (ITK's NIfTI writer reports a
    short write with `** ERROR: NWAD: ...` there and returns normally), so a failure can become one line of ours.

    Yields a list that holds the printed lines once the block has ended. A pipe, drained by a thread, takes the
    text: no file is needed (the disk may be full) and a long message cannot block the writer.
    """
    lines: list[str] = []
    with _STDERR_LOCK:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()  # Python's own pending text goes out first, not into the capture.
        try:
            saved = os.dup(2)
        except OSError:  # No standard error to redirect (a daemon): nothing can reach the terminal anyway.
            yield lines
            return
        read_end, write_end = os.pipe()
        chunks: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(read_end, chunks), daemon=True)
        reader.start()
        os.dup2(write_end, 2)
        os.close(write_end)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)  # Closes the pipe's last write end: the reader sees the end of the text.
            os.close(saved)
            reader.join()
            os.close(read_end)
            lines.extend(line for line in b''.join(chunks).decode(errors='replace').splitlines() if line.strip())


def _drain(fd: int, chunks: list[bytes]) -> None:
    while chunk := os.read(fd, 1 << 16):
        chunks.append(chunk)


def native_message(lines: Sequence[str]) -> str:
    """Lines a C library printed, as one line of plain words: '** ERROR: NWAD: wrote only 5648 of 16384 bytes to
    file' -> 'wrote only 5648 of 16384 bytes to file'."""
    cleaned = [re.sub(r'^(?:\*+\s*)?(?:(?:ERROR|WARNING|Error|Warning)\s*:\s*)?(?:[A-Z0-9_]{2,}:\s*)?', '',
                      line.strip()) for line in lines]
    return '; '.join(line for line in cleaned if line)
