# SPDX-License-Identifier: Apache-2.0
"""Slice grids of volumes as PNG: what a person looks at during training and after generation.

Display convention (radiological, for volumes packed by dataset_tool.py, whose axes D, H, W run towards superior,
posterior and the patient's left): axial slices show anterior at the top and the patient's left on the right;
coronal slices the head at the top and the patient's left on the right; sagittal slices the head at the top and
anterior on the left. Given the voxel spacing, slices are shown with square pixels (true proportions).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import PIL.Image

import dnnlib
from volumes import contract

PLANES = contract.PLANES
PREVIEW_SIZE = 256  # Previews of single volumes: each plane at least this many pixels on its long side.


def middle_slices(volume: np.ndarray, planes: Sequence[str] = ('axial',),
                  spacing: Sequence[float] | None = None, min_size: int = 0) -> np.ndarray:
    """Middle slices of one volume [C, D, H, W] (axes towards S, P and L, as packed), side by side, upright in the
    radiological display: one [C, H', W'] image.

    axial [H, W] at D // 2: anterior at the top, the patient's left on the right; coronal [D, W] at H // 2: head at
    the top, the patient's left on the right; sagittal [D, H] at W // 2: head at the top, anterior on the left.
    With `spacing` (x, y, z mm) every slice is resized to square pixels of the finest spacing, so anatomy keeps
    its proportions (6 x 6 x 12 mm voxels show twice as tall in coronal and sagittal views, not squashed). With
    `min_size`, every slice is then enlarged by one whole factor (nearest neighbour, keeping those proportions) until
    the long side of each is at least min_size pixels. Shorter slices are padded at the bottom to the tallest one.
    """
    slices = [contract.upright_slice(volume, plane) for plane in planes]  # [C, h, w] each
    if spacing is not None:
        finest = min(float(s) for s in spacing)
        slices = [_resize(s, contract.plane_pixel_mm(spacing, plane), finest) for plane, s in zip(planes, slices)]
    if min_size > 0:
        factor = max(1, -(-min_size // min(max(s.shape[1:]) for s in slices)))  # ceil: the smallest plane decides
        slices = [s.repeat(factor, axis=1).repeat(factor, axis=2) for s in slices]  # [C, h * f, w * f]
    height = max(s.shape[1] for s in slices)
    padded = [np.pad(s, [(0, 0), (0, height - s.shape[1]), (0, 0)], constant_values=s.min()) for s in slices]
    return np.concatenate(padded, axis=2)


def _resize(image: np.ndarray, pixel_mm: tuple[float, float], target_mm: float) -> np.ndarray:
    """[C, h, w] with (row, column) pixel sizes -> square pixels of target_mm (bilinear, per channel)."""
    _, h, w = image.shape
    size = (max(round(w * pixel_mm[1] / target_mm), 1), max(round(h * pixel_mm[0] / target_mm), 1))  # (w, h)
    if size == (w, h):
        return np.ascontiguousarray(image)
    return np.stack([np.asarray(PIL.Image.fromarray(np.ascontiguousarray(c, dtype=np.float32), 'F')
                                .resize(size, PIL.Image.BILINEAR)) for c in image])


def to_uint8(images: np.ndarray, drange: tuple[float, float]) -> np.ndarray:
    lo, hi = drange
    images = (np.asarray(images, dtype=np.float32) - lo) * (255 / (hi - lo))
    return np.rint(images).clip(0, 255).astype(np.uint8)


def volume_grid(volumes: np.ndarray, grid_size: tuple[int, int], drange: tuple[float, float],
                planes: Sequence[str] = ('axial',), spacing: Sequence[float] | None = None,
                min_size: int = 0) -> PIL.Image.Image:
    """Tile the middle slices of volumes [N, C, D, H, W] into a gw x gh grid image (middle_slices: each plane
    enlarged to at least min_size pixels on its long side).

    1- and 3-channel volumes become grayscale and RGB images; other channel counts (MRI sequences) are shown
    channel by channel, side by side.
    """
    gw, gh = grid_size
    N, C = volumes.shape[:2]
    if N != gw * gh:
        raise ValueError(f'volume_grid: {N} volumes do not fill a {gw}x{gh} grid')
    tiles = np.stack([middle_slices(v, planes, spacing, min_size) for v in volumes])  # [N, C, h, w]
    if C not in (1, 3):
        tiles = np.concatenate(list(tiles.transpose(1, 0, 2, 3)[:, :, None]), axis=3)  # [N, 1, h, C*w]
    tiles = to_uint8(tiles, drange)
    _, c, h, w = tiles.shape
    grid = tiles.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)  # [gh*h, gw*w, c]
    return PIL.Image.fromarray(grid[:, :, 0] if c == 1 else grid, 'L' if c == 1 else 'RGB')


def save_volume_grid(volumes: np.ndarray, path: str, grid_size: tuple[int, int], drange: tuple[float, float],
                     planes: Sequence[str] = ('axial',), spacing: Sequence[float] | None = None) -> None:
    """Write the grid as a PNG through the project's checked atomic writer."""
    image = volume_grid(volumes, grid_size, drange, planes, spacing)
    dnnlib.util.atomic_write(path, lambda f: image.save(f, format='PNG'))


def display_volumes(volumes: np.ndarray, info: contract.VolumeInfo) -> np.ndarray:
    """Network volumes [N, K, D, H, W] -> what a grid shows: the image channels and, with label maps, the label
    map scaled to [-1, 1] as one more channel."""
    if not info.label_values:
        return volumes
    maps = [contract.from_network(v, info)[1] for v in volumes]  # [D, H, W] label values each
    scale = np.asarray(info.label_values, dtype=np.float32)
    index = [np.searchsorted(scale, m).astype(np.float32) / max(len(scale) - 1, 1) * 2 - 1 for m in maps]
    return np.concatenate([volumes[:, :len(info.channels)], np.stack(index)[:, None]], axis=1)
