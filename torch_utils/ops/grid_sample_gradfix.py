# SPDX-License-Identifier: Apache-2.0
"""Bilinear `grid_sample` (zeros padding, align_corners=False) with derivatives of any order w.r.t. the input.

R1 differentiates D's input gradient, so the augment pipe's resampling needs a double backward. Torch 2.13's
`F.grid_sample` has one (`GridSampler2DBackwardBackward0`); older releases raise "derivative for
aten::grid_sampler_2d_backward is not implemented". `grid_sample` below probes the installed torch once and
uses the native op when it can, else a sampler built from gathers and weighted sums, which autograd can
differentiate to any order. Gradients with respect to the grid are not needed (the grid is a constant of the
augmentation) and the fallback does not provide them.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=None)
def native_has_double_backward() -> bool:
    x = torch.ones([1, 1, 2, 2], dtype=torch.float64, requires_grad=True)
    grid = torch.zeros([1, 1, 1, 2], dtype=torch.float64)
    try:
        y = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
        dx, = torch.autograd.grad(y.square().sum(), x, create_graph=True)
        dx.sum().backward()
    except RuntimeError:
        return False
    return True


def grid_sample(x: torch.Tensor, grid: torch.Tensor, force_fallback: bool = False) -> torch.Tensor:
    """x [N, C, H, W], grid [N, Ho, Wo, 2] in [-1, 1] (x, y) -> [N, C, Ho, Wo]."""
    if native_has_double_backward() and not force_fallback:
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    return _bilinear_by_gather(x, grid.detach())


def _bilinear_by_gather(x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    N, C, H, W = x.shape
    _, Ho, Wo, _ = grid.shape
    # Normalised coordinates -> pixel coordinates, align_corners=False: -1 is the outer edge of pixel 0.
    px = ((grid[..., 0] + 1) * W - 1) / 2
    py = ((grid[..., 1] + 1) * H - 1) / 2
    x0, y0 = px.floor(), py.floor()
    out = x.new_zeros([N, C, Ho * Wo])
    flat = x.reshape(N, C, H * W)  # [N, C, H*W]
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            weight = (1 - (px - xi).abs()) * (1 - (py - yi).abs())
            inside = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)  # Zeros padding outside the image.
            index = (yi.clamp(0, H - 1) * W + xi.clamp(0, W - 1)).long().reshape(N, 1, Ho * Wo).expand(N, C, -1)
            weight = (weight * inside).to(x.dtype).reshape(N, 1, Ho * Wo)
            out = out + flat.gather(2, index) * weight
    return out.reshape(N, C, Ho, Wo)  # [N, C, Ho*Wo] -> [N, C, Ho, Wo]
