# SPDX-License-Identifier: Apache-2.0
"""From an image and a mask to the region of interest the feature classes read, as PyRadiomics prepares it.

Order of the steps (PyRadiomics' feature extractor): keep the voxels whose mask value is the label; optionally
z-score the whole image; optionally resample image and mask onto a grid of the requested spacing that covers the
ROI's bounding box plus padDistance voxels (image with the named interpolator, keeping its pixel type; mask with
nearest neighbour), or without resampling optionally pre-crop both to that box (preCrop); check the ROI. That is
the pre-processed image the filters (filters.py) see; each image, original or filtered, is then cropped to the
ROI's bounding box. Intensities stay in the image's units and the image's pixel type is kept until the crop, so
the gray levels are binned with PyRadiomics' arithmetic (a float32 filtered image gets float32 bin edges).

The ROI can also be a box of fixed physical size centred on the mask or on the volume (`box_mask`), for features
that should see the same amount of tissue in every volume.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import SimpleITK as sitk

from volumes import volume_io
from volumes.contract import dhw_to_xyz, xyz_to_dhw

from .settings import Settings

#----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Roi:
    """A region of interest cropped to its bounding box: what the feature classes compute from."""
    image: np.ndarray                      # [D, H, W] float64 intensities (the image's units).
    mask: np.ndarray                       # [D, H, W] bool, True inside the ROI.
    spacing: tuple[float, float, float]    # Voxel spacing (x, y, z) in mm.
    pixel_dtype: np.dtype = np.dtype(np.float64)  # The image's pixel type before the cast (the binning's arithmetic).

    @property
    def values(self) -> np.ndarray:
        """Intensities of the ROI's voxels [N] (C order)."""
        return self.image[self.mask]

#----------------------------------------------------------------------------
# Masks.


def check_same_grid(image: sitk.Image, mask: sitk.Image, image_name: str, mask_name: str) -> None:
    """Raise ValueError unless the mask samples the image's grid (size, spacing, origin, direction)."""
    a, b = volume_io.image_grid(image), volume_io.image_grid(mask)
    if volume_io.same_grid(a, b):
        return
    what = ('size' if a.size != b.size else 'spacing' if not np.allclose(a.spacing, b.spacing, rtol=1e-6, atol=1e-6)
            else 'origin' if not np.allclose(a.origin, b.origin, atol=1e-3) else 'direction')
    show = lambda g: 'x'.join(f'{v:g}' for v in getattr(g, what)) if what != 'direction' else str(  # noqa: E731
        np.round(g.direction, 4).tolist())
    raise ValueError(f'mask {mask_name} lies on another grid than {image_name} ({what} {show(b)} vs {show(a)})')


def correct_mask(image: sitk.Image, mask: sitk.Image, label: int, mask_name: str) -> sitk.Image:
    """PyRadiomics' correctMask: a mask on another grid, resampled onto the image's with nearest neighbour, when the
    bounding box of its label lies inside the image (to within 1e-3 voxel).

    Raises:
        ValueError: the label is absent, or its bounding box reaches outside the image.
    """
    array = sitk.GetArrayViewFromImage(mask)
    nonzero = np.argwhere(array == label)[:, ::-1]  # [N, 3] as (x, y, z)
    if len(nonzero) == 0:
        raise ValueError(f'mask {mask_name} has no voxel with label {label}: the ROI is empty')
    corners = [mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in c])
               for c in (nonzero.min(0) - 0.5, nonzero.max(0) + 0.5)]
    inside = [np.asarray(image.TransformPhysicalPointToContinuousIndex(c)) for c in corners]
    low, high = np.minimum(*inside), np.maximum(*inside)
    if np.any(low < -0.5 - 1e-3) or np.any(high > np.asarray(image.GetSize()) - 0.5 + 1e-3):
        raise ValueError(f'mask {mask_name}: the ROI reaches outside the image, so correctMask cannot resample it')
    return sitk.Resample(mask, image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, mask.GetPixelID())


def label_mask(mask: sitk.Image, label: int, mask_name: str) -> sitk.Image:
    """The voxels of mask equal to label, as a 0/1 UInt8 image on the mask's grid.

    Raises:
        ValueError: the label does not occur in the mask (naming the labels that do).
    """
    array = sitk.GetArrayViewFromImage(mask)
    roi = array == label
    if not roi.any():
        found = [int(v) for v in np.unique(array) if v != 0][:10]
        detail = f'it holds labels {found}' if found else 'it is empty'
        raise ValueError(f'mask {mask_name} has no voxel with label {label} ({detail}): the ROI is empty')
    out = sitk.GetImageFromArray(roi.astype(np.uint8))
    out.CopyInformation(mask)
    return out


def box_mask(image: sitk.Image, box_mm: tuple[float, float, float], centre_on: sitk.Image | None = None) -> sitk.Image:
    """A 0/1 mask of a box of box_mm (x, y, z) on the image's grid, centred on the bounding box of centre_on's
    nonzero voxels, or on the volume when centre_on is None. The box keeps its size and moves to stay inside the
    volume; it is cut only where the volume is smaller than the box."""
    size = np.asarray(image.GetSize())
    n = np.clip(np.rint(np.asarray(box_mm, dtype=np.float64) / np.asarray(image.GetSpacing())), 1, size).astype(int)
    if centre_on is None:
        centre = (size - 1) / 2
    else:
        nonzero = dhw_to_xyz(np.argwhere(sitk.GetArrayViewFromImage(centre_on)))  # [N, 3] as (x, y, z).
        centre = (nonzero.min(0) + nonzero.max(0)) / 2
    start = np.clip(np.rint(centre - (n - 1) / 2).astype(int), 0, size - n)
    array = np.zeros(xyz_to_dhw(size), dtype=np.uint8)  # [D, H, W]
    array[start[2]:start[2] + n[2], start[1]:start[1] + n[1], start[0]:start[0] + n[0]] = 1
    out = sitk.GetImageFromArray(array)
    out.CopyInformation(image)
    return out

#----------------------------------------------------------------------------
# Pre-processing.


def normalize_image(image: sitk.Image, settings: Settings) -> sitk.Image:
    """PyRadiomics' normalisation: z-score over the whole image, clip at removeOutliers, then scale."""
    image = sitk.Normalize(image)
    if settings.removeOutliers is not None:
        limit = float(settings.removeOutliers)
        image = sitk.Clamp(image, lowerBound=-limit, upperBound=limit)
    return image * float(settings.normalizeScale)


def _bounding_box(mask: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Index (x, y, z) of the first voxel and size (x, y, z) of the bounding box of the mask's nonzero voxels."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    box = np.asarray(stats.GetBoundingBox(1))
    return box[:3], box[3:]


def resample_grid(mask: sitk.Image, settings: Settings) -> volume_io.Grid | None:
    """The grid PyRadiomics resamples onto, or None when the spacing already matches (no interpolation).

    The new grid keeps the mask's direction and starts half an old voxel before the first old voxel (so old and new
    voxel corners meet at the image corner); of it, only the part covering the ROI's bounding box plus padDistance
    new voxels, within the image, is kept. Axes where the ROI is one voxel thick keep their spacing.
    """
    mask_spacing = np.asarray(mask.GetSpacing(), dtype=np.float64)
    spacing = np.asarray(settings.resampledPixelSpacing, dtype=np.float64)
    spacing = np.where(spacing == 0, mask_spacing, spacing)
    lower, extent = _bounding_box(mask)
    spacing = np.where(extent != 1, spacing, mask_spacing)
    if np.allclose(mask_spacing, spacing):
        return None
    ratio = mask_spacing / spacing
    new_lower = np.floor((lower - 0.5) * ratio - settings.padDistance)
    new_upper = np.ceil((lower + extent - 0.5) * ratio + settings.padDistance)
    new_lower = np.maximum(new_lower, 0)
    new_upper = np.minimum(new_upper, np.ceil(np.asarray(mask.GetSize()) * ratio) - 1)
    size = (new_upper - new_lower + 1).astype(int)
    origin_index = 0.5 * (spacing - mask_spacing) / mask_spacing + new_lower / ratio  # In old continuous indices.
    origin = mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in origin_index])
    return volume_io.Grid(tuple(int(s) for s in size), tuple(float(s) for s in spacing), tuple(origin),
                          tuple(mask.GetDirection()))


def _resample_onto(image: sitk.Image, grid: volume_io.Grid, interpolator: int) -> sitk.Image:
    """Resample onto grid keeping the pixel type (so interpolated integer images stay integer, as in PyRadiomics)."""
    return sitk.Resample(image, list(grid.size), sitk.Transform(), interpolator, list(grid.origin), list(grid.spacing),
                         list(grid.direction), 0.0, image.GetPixelID())


def check_roi(mask: np.ndarray, settings: Settings, name: str) -> None:
    """PyRadiomics' ROI checks: not a single voxel, enough dimensions, enough voxels (mask [D, H, W] bool)."""
    count = int(mask.sum())
    if count == 0:
        raise ValueError(f'{name}: the ROI is empty')
    nonzero = np.argwhere(mask)
    dims = int(np.sum(nonzero.max(0) > nonzero.min(0)))
    if dims == 0:
        raise ValueError(f'{name}: the ROI is a single voxel')
    if dims < settings.minimumROIDimensions:
        raise ValueError(f'{name}: the ROI spans {dims} dimension(s); minimumROIDimensions is '
                         f'{settings.minimumROIDimensions}')
    if settings.minimumROISize is not None and count <= settings.minimumROISize:
        raise ValueError(f'{name}: the ROI has {count} voxels; minimumROISize is {settings.minimumROISize}')


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The [D, H, W] slices of the bounding box of mask's True voxels."""
    nonzero = np.argwhere(mask)
    return tuple(slice(int(a), int(b) + 1) for a, b in zip(nonzero.min(0), nonzero.max(0)))


def crop(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both [D, H, W] arrays cut to the bounding box of mask."""
    box = bounding_box(mask)
    return image[box], mask[box]


def pad_crop(image: sitk.Image, roi_mask: sitk.Image, pad: int) -> tuple[sitk.Image, sitk.Image]:
    """Both images cut to the ROI's bounding box plus pad voxels on every side, within the image (PyRadiomics'
    crop of the pre-processing: the filters then see pad voxels of context)."""
    box = bounding_box(sitk.GetArrayViewFromImage(roi_mask) > 0)
    size = roi_mask.GetSize()
    lower = [max(box[2 - a].start - pad, 0) for a in range(3)]  # (x, y, z)
    upper = [max(size[a] - box[2 - a].stop - pad, 0) for a in range(3)]
    return sitk.Crop(image, lower, upper), sitk.Crop(roi_mask, lower, upper)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """An image pre-processed as PyRadiomics does before it applies any filter."""
    image: sitk.Image                      # Normalised, resampled or pre-cropped, in its pixel type.
    mask: np.ndarray                       # [D, H, W] bool on image's grid, True inside the ROI.
    box: tuple[slice, slice, slice]        # The ROI's bounding box in mask.

    def roi(self, image: sitk.Image | None = None) -> Roi:
        """The ROI of this image, or of a filtered image on its grid, cropped to the bounding box."""
        image = self.image if image is None else image
        array = sitk.GetArrayViewFromImage(image)[self.box]
        # np.array copies: the view dies with image, which may be a temporary (normalised, resampled, filtered).
        return Roi(np.array(array, dtype=np.float64), np.ascontiguousarray(self.mask[self.box]),
                   tuple(image.GetSpacing()), array.dtype)


def preprocess(image: sitk.Image, roi_mask: sitk.Image, settings: Settings, name: str = 'volume') -> Prepared:
    """Normalise, resample or pre-crop, and check the ROI, as PyRadiomics does before any filter.

    Args:
        image: Scalar 3D image in its own units.
        roi_mask: 0/1 image on the image's grid (label_mask or box_mask).
        settings: Normalisation, resampling, cropping and ROI-check settings.
        name: How errors name the volume.

    Raises:
        ValueError: an ROI that is empty, a single voxel, too flat or too small.
    """
    if settings.normalize:
        image = normalize_image(image, settings)
    if settings.resampledPixelSpacing is not None:
        grid = resample_grid(roi_mask, settings)
        if grid is not None:
            image = _resample_onto(image, grid, getattr(sitk, settings.interpolator))
            roi_mask = _resample_onto(roi_mask, grid, sitk.sitkNearestNeighbor)
        else:  # Already at that spacing: PyRadiomics still crops to the ROI plus padDistance.
            image, roi_mask = pad_crop(image, roi_mask, settings.padDistance)
    elif settings.preCrop:
        check_roi(sitk.GetArrayViewFromImage(roi_mask) > 0, settings, name)
        image, roi_mask = pad_crop(image, roi_mask, settings.padDistance)
    mask = sitk.GetArrayFromImage(roi_mask) > 0  # [D, H, W]
    check_roi(mask, settings, name)
    return Prepared(image, mask, bounding_box(mask))


def prepare(image: sitk.Image, roi_mask: sitk.Image, settings: Settings, name: str = 'volume') -> Roi:
    """The ROI of one (unfiltered) image, pre-processed as PyRadiomics does and cropped to its bounding box."""
    return preprocess(image, roi_mask, settings, name).roi()

#----------------------------------------------------------------------------
# Discretisation.


def bin_edges(values: np.ndarray, settings: Settings, dtype: np.dtype | None = None) -> np.ndarray:
    """PyRadiomics' bin edges for the ROI's intensities, computed in dtype (the image's pixel type; default: that
    of values), as PyRadiomics computes them in the image's own type.

    Fixed bin width W: edges at multiples of W from the largest multiple <= the minimum, past the maximum, so every
    bin is half-open [e_k, e_k+1) (a maximum on an edge gets a bin of its own); a flat ROI gets one bin. Fixed bin
    count: numpy's histogram edges with the last one raised by 1, so the maximum falls in the last bin.
    """
    if settings.binCount is not None:
        edges = np.histogram(values, settings.binCount)[1]
        edges[-1] += 1
        return edges
    # Scalars of the pixel type with a Python-number width keep that type (NumPy's promotion), so a float32 image
    # gets float32 edges, as in PyRadiomics; a value within float32 rounding of an edge then falls on the same side.
    # Integer images are binned in float64: the same edges, without the overflow of e.g. uint8 255 + 2 * 25.
    dtype = np.dtype(dtype or np.asarray(values).dtype)
    native = np.asarray(values).astype(dtype if np.issubdtype(dtype, np.floating) else np.float64, copy=False)
    width = int(settings.binWidth) if float(settings.binWidth).is_integer() else float(settings.binWidth)
    low, high = native.min(), native.max()
    return np.arange(low - low % width, high + 2 * width, width)


def discretize(roi: Roi, settings: Settings) -> np.ndarray:
    """Gray levels [D, H, W] int32: 1, 2, ... inside the ROI (bin index from bin_edges), 0 outside."""
    values = roi.values
    levels = np.zeros(roi.mask.shape, dtype=np.int32)
    levels[roi.mask] = np.digitize(values, bin_edges(values, settings, roi.pixel_dtype))
    return levels
