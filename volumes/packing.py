# SPDX-License-Identifier: Apache-2.0
"""The packing pipeline: source images to the stored grid and values, the same for dataset_tool.py (every case)
and projector.py (a target volume).

For one case: every channel is reoriented (axes permuted and flipped towards LPS, no interpolation), the first
channel's target grid is made (its axes; centred on the volume, or on the mask's or the body's bounding box with a
crop; --spacing, --fov and --size), optionally turned onto the world's axes (orient 'lps': a physical resampling of
an oblique scan), every channel is resampled onto it with the named interpolator and its values are mapped to
stored integers (volumes.contract.IntensityMapping). A label map goes the same way with a label-safe interpolator.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import SimpleITK as sitk

from volumes import volume_io
from volumes.contract import IntensityMapping, dhw_to_xyz

CROPS = ('none', 'mask', 'body')


@dataclasses.dataclass(frozen=True)
class GridOptions:
    """The geometric target of packing; size, spacing and fov are (x, y, z) or None."""
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    fov: tuple[float, float, float] | None = None
    orient: str = 'source'          # 'source': keep the (reoriented) source axes; 'lps': resample onto world axes.
    interpolation: str = 'linear'   # The image interpolator: 'linear', 'bspline' or 'nearest'.
    crop: str = 'none'              # Centre the box on: 'none' the volume, 'mask' the label map's foreground,
                                    # 'body' the body (Otsu threshold, largest component).
    label_interpolation: str = 'nearest'  # 'nearest' or 'gaussian' (ITK's label-Gaussian).


@dataclasses.dataclass(frozen=True)
class PackedCase:
    """One packed case: the stored volume [C, D, H, W], its label map [D, H, W] (or None) and their grid."""
    volume: np.ndarray
    grid: volume_io.Grid
    labels: np.ndarray | None = None


def pack_images(images: list[sitk.Image], options: GridOptions, intensity: IntensityMapping, names: list[str],
                labels: sitk.Image | None = None, labels_name: str = 'the label map') -> PackedCase:
    """Pack the channels of one case (scalar images in any orientation; `names` name them in errors) and its label
    map, which must lie on the first channel's grid and hold non-negative integers.

    Raises:
        ValueError: a channel with non-finite values or no contrast, a label map off the grid or not integer-valued,
            a crop to a mask that is missing or empty (each naming the file).
    """
    if labels is not None:
        check_label_map(labels, images[0], labels_name, names[0])
        labels = volume_io.reorient(as_label_image(labels))
    images = [volume_io.reorient(image) for image in images]
    grid = case_grid(images[0], options, labels, labels_name)
    channels = []
    for name, image in zip(names, images):
        array = volume_io.image_to_array(volume_io.resample(image, grid, interpolation=options.interpolation))
        channels.append(intensity.to_stored(array, name))  # [D, H, W]
    packed_labels = None
    if labels is not None:
        resampled = volume_io.resample_labels(labels, grid, options.label_interpolation)
        packed_labels = sitk.GetArrayFromImage(resampled)  # [D, H, W]
    return PackedCase(np.stack(channels), grid, packed_labels)  # [C, D, H, W]


def case_grid(image: sitk.Image, options: GridOptions, labels: sitk.Image | None = None,
              labels_name: str = 'the label map') -> volume_io.Grid:
    """The grid a (reoriented) first channel is packed onto."""
    centre = None
    if options.crop == 'mask':
        if labels is None:
            raise ValueError('--crop=mask needs a label map (--seg) for every case')
        centre = foreground_centre(labels, labels_name)
    elif options.crop == 'body':
        centre = foreground_centre(body_mask(image), 'the body')
    grid = volume_io.target_grid(image, options.size, options.spacing, options.fov, centre=centre)
    return volume_io.axis_aligned(grid) if options.orient == 'lps' else grid


def foreground_centre(mask: sitk.Image, name: str) -> np.ndarray:
    """World position (mm) of the centre of the bounding box of a mask's non-zero voxels."""
    array = sitk.GetArrayViewFromImage(mask)
    nonzero = np.nonzero(array)
    if nonzero[0].size == 0:
        raise ValueError(f'{name} has no foreground to crop to')
    centre_dhw = [(int(idx.min()) + int(idx.max())) / 2 for idx in nonzero]
    return np.asarray(mask.TransformContinuousIndexToPhysicalPoint([float(v) for v in dhw_to_xyz(centre_dhw)]))


def body_mask(image: sitk.Image) -> sitk.Image:
    """The body: Otsu's threshold of the image, its largest connected component."""
    foreground = sitk.OtsuThreshold(sitk.Cast(image, sitk.sitkFloat32), 0, 1)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    return components == 1


def check_label_map(labels: sitk.Image, image: sitk.Image, labels_name: str, image_name: str) -> None:
    """Raise ValueError unless the label map lies on the image's grid and holds integers 0..255."""
    a, b = volume_io.image_grid(labels), volume_io.image_grid(image)
    spacing = np.asarray(b.spacing)
    if a.size != b.size or not np.allclose(a.spacing, b.spacing, rtol=1e-4) or \
            not np.allclose(a.origin, b.origin, atol=1e-3 * spacing.min()) or \
            not np.allclose(a.direction, b.direction, atol=1e-4):
        describe = lambda g: f'size {"x".join(map(str, g.size))}, spacing {np.round(g.spacing, 4).tolist()}, ' \
            f'origin {np.round(g.origin, 3).tolist()}'  # noqa: E731
        raise ValueError(f'{labels_name} lies on another grid than {image_name} ({describe(a)} against {describe(b)})')
    array = sitk.GetArrayViewFromImage(labels)
    if labels.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f'{labels_name} has several components per voxel; expected one label value per voxel')
    if array.dtype.kind == 'f' and not np.array_equal(array, np.round(array)):
        example = array[array != np.round(array)][0]
        raise ValueError(f'{labels_name} holds values that are not integers (e.g. {example:g}); expected a label map')
    if array.min() < 0 or array.max() > 255:
        raise ValueError(f'{labels_name} holds label values outside 0..255 ({array.min():g}..{array.max():g}); '
                         f'expected a label map of at most 255 labels')


def as_label_image(labels: sitk.Image) -> sitk.Image:
    """A checked label map as a uint8 image."""
    return sitk.Cast(labels, sitk.sitkUInt8)


def split_channels(image: sitk.Image) -> list[sitk.Image]:
    """The scalar channels of a (possibly multi-component) image."""
    if image.GetNumberOfComponentsPerPixel() == 1:
        return [image]
    return [sitk.VectorIndexSelectionCast(image, c) for c in range(image.GetNumberOfComponentsPerPixel())]


def representative_geometry(grids: list[volume_io.Grid]) -> tuple[tuple[float, ...], tuple[float, float, float]]:
    """(direction, centre) that stands for a dataset's cases: the direction closest to all the others (the medoid,
    so it is one of theirs and a true rotation) and the median centre."""
    directions = np.asarray([g.direction for g in grids], dtype=np.float64)                 # [N, 9]
    distances = np.linalg.norm(directions[:, None] - directions[None], axis=-1).sum(axis=1)  # [N]
    direction = tuple(float(d) for d in directions[int(np.argmin(distances))])
    centre = tuple(float(c) for c in np.median(np.asarray([g.centre for g in grids]), axis=0))
    return direction, centre
