# SPDX-License-Identifier: Apache-2.0
"""The packing pipeline: source images to the stored grid and values, the same for dataset_tool.py (every case)
and projector.py (a target volume).

For one case: every channel is reoriented (axes permuted and flipped towards LPS, no interpolation), the first
channel's target grid is made (same centre and axes; --spacing, --fov and --size), optionally turned onto the
world's axes (orient 'lps': a physical resampling of an oblique scan), every channel is resampled onto it with the
named interpolator, and its values are mapped to stored integers (volumes.contract.IntensityMapping).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import SimpleITK as sitk

from volumes.contract import IntensityMapping
from volumes import volume_io


@dataclasses.dataclass(frozen=True)
class GridOptions:
    """The geometric target of packing; size, spacing and fov are (x, y, z) or None."""
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    fov: tuple[float, float, float] | None = None
    orient: str = 'source'          # 'source': keep the (reoriented) source axes; 'lps': resample onto world axes.
    interpolation: str = 'linear'   # The image interpolator: 'linear', 'bspline' or 'nearest'.


@dataclasses.dataclass(frozen=True)
class PackedCase:
    """One packed case: the stored volume [C, D, H, W] and the grid it lies on (world geometry)."""
    volume: np.ndarray
    grid: volume_io.Grid


def case_grid(image: sitk.Image, options: GridOptions) -> volume_io.Grid:
    """The grid a (reoriented) first channel is packed onto."""
    grid = volume_io.target_grid(image, options.size, options.spacing, options.fov)
    return volume_io.axis_aligned(grid) if options.orient == 'lps' else grid


def pack_images(images: list[sitk.Image], options: GridOptions, intensity: IntensityMapping,
                names: list[str]) -> PackedCase:
    """Pack the channels of one case (scalar images in any orientation; `names` name them in errors).

    Raises:
        ValueError: a channel with non-finite values or no contrast (naming it).
    """
    images = [volume_io.reorient(image) for image in images]
    grid = case_grid(images[0], options)
    channels = []
    for name, image in zip(names, images):
        array = volume_io.image_to_array(volume_io.resample(image, grid, interpolation=options.interpolation))
        channels.append(intensity.to_stored(array, name))  # [D, H, W]
    return PackedCase(np.stack(channels), grid)  # [C, D, H, W]


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
