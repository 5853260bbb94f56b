# SPDX-License-Identifier: Apache-2.0
"""Slice grids of volumes as PNG: what a person looks at during training and after generation."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import PIL.Image

import dnnlib

PLANES = ('axial', 'coronal', 'sagittal')


def middle_slices(volume: np.ndarray, planes: Sequence[str] = ('axial',)) -> np.ndarray:
    """Middle slices of one volume [C, D, H, W], side by side, as one [C, H', W'] image.

    axial is [H, W] at D // 2, coronal [D, W] at H // 2, sagittal [D, H] at W // 2; the shorter slices are
    padded at the bottom to the tallest one.
    """
    C, D, H, W = volume.shape
    picks = dict(axial=volume[:, D // 2], coronal=volume[:, :, H // 2], sagittal=volume[:, :, :, W // 2])
    for plane in planes:
        if plane not in picks:
            raise ValueError(f'Unknown plane "{plane}"; expected one of {PLANES}')
    slices = [picks[plane] for plane in planes]
    height = max(s.shape[1] for s in slices)
    padded = [np.pad(s, [(0, 0), (0, height - s.shape[1]), (0, 0)], constant_values=s.min()) for s in slices]
    return np.concatenate(padded, axis=2)


def to_uint8(images: np.ndarray, drange: tuple[float, float]) -> np.ndarray:
    lo, hi = drange
    images = (np.asarray(images, dtype=np.float32) - lo) * (255 / (hi - lo))
    return np.rint(images).clip(0, 255).astype(np.uint8)


def volume_grid(volumes: np.ndarray, grid_size: tuple[int, int], drange: tuple[float, float],
                planes: Sequence[str] = ('axial',)) -> PIL.Image.Image:
    """Tile the middle slices of volumes [N, C, D, H, W] into a gw x gh grid image.

    1- and 3-channel volumes become grayscale and RGB images; other channel counts (MRI sequences) are shown
    channel by channel, side by side.
    """
    gw, gh = grid_size
    N, C = volumes.shape[:2]
    if N != gw * gh:
        raise ValueError(f'volume_grid: {N} volumes do not fill a {gw}x{gh} grid')
    tiles = np.stack([middle_slices(v, planes) for v in volumes])  # [N, C, h, w]
    if C not in (1, 3):
        tiles = np.concatenate(list(tiles.transpose(1, 0, 2, 3)[:, :, None]), axis=3)  # [N, 1, h, C*w]
    tiles = to_uint8(tiles, drange)
    _, c, h, w = tiles.shape
    grid = tiles.reshape(gh, gw, c, h, w).transpose(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c)  # [gh*h, gw*w, c]
    return PIL.Image.fromarray(grid[:, :, 0] if c == 1 else grid, 'L' if c == 1 else 'RGB')


def save_volume_grid(volumes: np.ndarray, path: str, grid_size: tuple[int, int], drange: tuple[float, float],
                     planes: Sequence[str] = ('axial',)) -> None:
    """Write the grid as a PNG through the project's checked atomic writer."""
    image = volume_grid(volumes, grid_size, drange, planes)
    dnnlib.util.atomic_write(path, lambda f: image.save(f, format='PNG'))
