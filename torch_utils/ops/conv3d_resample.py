# SPDX-License-Identifier: Apache-2.0
"""3D convolution fused with per-axis FIR up-sampling and down-sampling.

The result always equals the generic chain `upfirdn3d(up, padding) -> conv3d -> upfirdn3d(down)`, but cheaper
routes are taken where they exist: a 1x1x1 kernel resamples on the smaller side of the convolution, down-sampling
becomes a strided convolution after the FIR filter, and up-sampling becomes a transposed convolution with
stride = up followed by the FIR filter.

Only F.conv3d and F.conv_transpose3d are used. Both have native double backward in current PyTorch (R1 and the
path-length penalty differentiate through them), so no gradfix replacement is needed for the convolutions.
Per-axis values are in x, y, z order (W, H, D), as in upfirdn3d.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils.ops import upfirdn3d
from torch_utils.ops.upfirdn3d import FilterLike, IntXYZ

#----------------------------------------------------------------------------


def _conv3d(x: torch.Tensor, w: torch.Tensor, stride=1, padding=0, groups: int = 1, transpose: bool = False,
            flip_weight: bool = True) -> torch.Tensor:
    """F.conv3d / F.conv_transpose3d; flip_weight=False flips the kernel (true convolution)."""
    if not flip_weight:
        w = w.flip([2, 3, 4])
    stride, padding = _triple(stride), _triple(padding)
    if _split_batch_of_one(x, w, groups):
        split = _conv_transpose3d_split if transpose else _conv3d_split
        return split(x, w, stride, padding, groups)
    if transpose:
        return F.conv_transpose3d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv3d(x, w, stride=stride, padding=padding, groups=groups)


def _triple(value) -> list[int]:
    return [int(value)] * 3 if isinstance(value, (int, np.integer)) else [int(v) for v in value]

#----------------------------------------------------------------------------
# Batch 1 on the CPU. For a single volume with groups=1 and fewer than 20481 values in [N*C, D, H] (every layer of
# the networks at batch 1), torch runs conv3d, conv_transpose3d and their backward on its slow native kernels
# instead of oneDNN: 5-7x slower than the same convolution on two volumes. Cutting the volume into two halves
# along D (with the rows the kernel needs from the other half) and stacking them as a batch of 2 keeps the
# convolution on oneDNN; the result is the same convolution (all ops are differentiable, so double backward too).

_ONEDNN_MIN_VALUES = 20480  # torch picks oneDNN for N = 1 only when N * C * D * H exceeds this.


def _split_batch_of_one(x: torch.Tensor, w: torch.Tensor, groups: int) -> bool:
    return (x.device.type == 'cpu' and x.dtype == torch.float32 and x.shape[0] == 1 and groups == 1
            and x.shape[2] >= 4 and w.shape[2:].numel() > 1 and torch.backends.mkldnn.is_available()
            and torch.backends.mkldnn.enabled and x.shape[1] * x.shape[2] * x.shape[3] <= _ONEDNN_MIN_VALUES)


def _conv3d_split(x: torch.Tensor, w: torch.Tensor, stride: list[int], padding: list[int],
                  groups: int) -> torch.Tensor:
    """F.conv3d of one volume as two overlapping halves along D, run as a batch of 2."""
    kz, sz, pz = w.shape[2], stride[0], padding[0]
    out_d = (x.shape[2] + 2 * pz - kz) // sz + 1
    half = -(-out_d // 2)  # Output rows per half; an odd count gets one extra row, dropped at the end.
    rows = (half - 1) * sz + kz  # Input rows one half reads.
    x = F.pad(x, [0, 0, 0, 0, pz, pz + (2 * half - out_d) * sz])  # [1, I, D', H, W]
    x = torch.cat([x.narrow(2, 0, rows), x.narrow(2, half * sz, rows)], dim=0)  # [2, I, rows, H, W]
    y = F.conv3d(x, w, stride=stride, padding=[0, padding[1], padding[2]], groups=groups)  # [2, O, half, H', W']
    y = y.transpose(0, 1).reshape(1, y.shape[1], 2 * half, *y.shape[3:])  # [1, O, 2 * half, H', W']
    return y.narrow(2, 0, out_d)


def _conv_transpose3d_split(x: torch.Tensor, w: torch.Tensor, stride: list[int], padding: list[int],
                            groups: int) -> torch.Tensor:
    """F.conv_transpose3d of one volume: each half of the input rows makes its part of the output, and the
    rows where the two parts overlap (kernel taller than the stride) are added."""
    kz, sz, pz = w.shape[2], stride[0], padding[0]
    in_d = x.shape[2]
    half = -(-in_d // 2)
    x = F.pad(x, [0, 0, 0, 0, 0, 2 * half - in_d])  # [1, I, 2 * half, H, W]
    x = torch.cat([x.narrow(2, 0, half), x.narrow(2, half, half)], dim=0)  # [2, I, half, H, W]
    y = F.conv_transpose3d(x, w, stride=stride, padding=[0, padding[1], padding[2]], groups=groups)
    first, second = y[:1], y[1:]  # Each [1, O, rows, H', W'], starting at output rows 0 and half * sz.
    rows, offset = y.shape[2], half * sz
    overlap = rows - offset
    if overlap >= 0:
        parts = [first.narrow(2, 0, offset), first.narrow(2, offset, overlap) + second.narrow(2, 0, overlap),
                 second.narrow(2, overlap, rows - overlap)]
    else:
        gap = list(first.shape)
        gap[2] = -overlap
        parts = [first, first.new_zeros(gap), second]
    y = torch.cat(parts, dim=2)  # [1, O, (2 * half - 1) * sz + kz, H', W'], the uncropped full output.
    return y.narrow(2, pz, (in_d - 1) * sz - 2 * pz + kz)


def _transpose_weight(w: torch.Tensor, groups: int) -> torch.Tensor:
    """[O, I/g, k, k, k] -> [I, O/g, k, k, k], the layout conv_transpose3d takes, transposing within each group."""
    out_channels, in_per_group = w.shape[:2]
    if groups == 1:
        return w.transpose(0, 1)
    w = w.reshape(groups, out_channels // groups, in_per_group, *w.shape[2:])  # [g, O/g, I/g, kz, ky, kx]
    w = w.transpose(1, 2)  # [g, I/g, O/g, kz, ky, kx]
    return w.reshape(groups * in_per_group, out_channels // groups, *w.shape[3:])  # [I, O/g, kz, ky, kx]


def _zyx(values) -> list[int]:
    """x, y, z values -> the z, y, x order torch's conv arguments use."""
    return [values[2], values[1], values[0]]


def _total_padding(padding, f_up: FilterLike, f_down: FilterLike, up, down) -> list[int]:
    """User padding plus the filter padding that upsample3d / downsample3d would add when they are active."""
    pad = list(padding)
    sizes_up = upfirdn3d.filter_sizes(f_up)
    sizes_down = upfirdn3d.filter_sizes(f_down)
    for axis in range(3):
        if max(up) > 1:
            fs, u = sizes_up[axis], up[axis]
            pad[2 * axis] += (fs + u - 1) // 2
            pad[2 * axis + 1] += (fs - u) // 2
        if max(down) > 1:
            fs, d = sizes_down[axis], down[axis]
            pad[2 * axis] += (fs - d + 1) // 2
            pad[2 * axis + 1] += (fs - d) // 2
    return pad


#----------------------------------------------------------------------------


@misc.profiled_function
def conv3d_resample(x: torch.Tensor, w: torch.Tensor, f: FilterLike = None, up: IntXYZ = 1, down: IntXYZ = 1,
                    padding: IntXYZ = 0, groups: int = 1, flip_weight: bool = True,
                    flip_filter: bool = False) -> torch.Tensor:
    r"""3D convolution with optional per-axis up-sampling and down-sampling.

    Padding is applied once, relative to the up-sampled volume, on top of the filter padding of upsample3d and
    downsample3d. A 1D filter acts only on the resampled axes (up=[2, 2, 1] leaves z unfiltered).

    Args:
        x: input [N, I, D, H, W].
        w: weight [O, I / groups, kz, ky, kx].
        f: FIR filter for the resampling (from upfirdn3d.setup_filter); None = identity.
        up: up-sampling factor, int or [ux, uy, uz].
        down: down-sampling factor, int or [dx, dy, dz].
        padding: int, [px, py, pz] (symmetric) or [x0, x1, y0, y1, z0, z1]; relative to the up-sampled volume.
        groups: convolution groups.
        flip_weight: True: correlation (torch's conv3d); False: true convolution.
        flip_filter: passed to upfirdn3d.

    Returns:
        [N, O, D', H', W'].
    """
    if not isinstance(w, torch.Tensor) or w.ndim != 5 or w.dtype != x.dtype:
        raise ValueError(f'conv3d_resample: w must be a 5D tensor [O, I/groups, kz, ky, kx] of dtype {x.dtype}')
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or x.shape[1] != w.shape[1] * groups:
        raise ValueError(f'conv3d_resample: x must be [N, {w.shape[1] * groups}, D, H, W] for groups={groups} '
                         f'and w {list(w.shape)}, got {list(x.shape)}')
    if groups < 1 or w.shape[0] % groups != 0:
        raise ValueError(f'conv3d_resample: groups={groups} must be >= 1 and divide the {w.shape[0]} outputs')
    up = upfirdn3d.parse_xyz(up, 'up')
    down = upfirdn3d.parse_xyz(down, 'down')
    f_up = upfirdn3d.select_axes(f, up)
    f_down = upfirdn3d.select_axes(f, down)
    pad = _total_padding(upfirdn3d.parse_padding(padding), f_up, f_down, up, down)
    any_up, any_down = max(up) > 1, max(down) > 1
    kz, ky, kx = w.shape[2:]
    up_gain = float(np.prod(up))

    # 1x1x1 kernel: resample on whichever side of the convolution has fewer voxels.
    if (kz, ky, kx) == (1, 1, 1) and any_down and not any_up:
        x = upfirdn3d.upfirdn3d(x, f_down, down=down, padding=pad, flip_filter=flip_filter)
        return _conv3d(x, w, groups=groups, flip_weight=flip_weight)
    if (kz, ky, kx) == (1, 1, 1) and any_up and not any_down:
        x = _conv3d(x, w, groups=groups, flip_weight=flip_weight)
        return upfirdn3d.upfirdn3d(x, f_up, up=up, padding=pad, gain=up_gain, flip_filter=flip_filter)

    # Down-sampling only: FIR filter first, then a strided convolution does the decimation.
    if any_down and not any_up:
        x = upfirdn3d.upfirdn3d(x, f_down, padding=pad, flip_filter=flip_filter)
        return _conv3d(x, w, stride=_zyx(down), groups=groups, flip_weight=flip_weight)

    # Up-sampling: transposed convolution with stride = up, then the FIR filter on the remaining padding.
    if any_up:
        return _conv_up(x, w, f_up, f_down, up, down, pad, groups, flip_weight, flip_filter, up_gain)

    # No resampling: a plain convolution when the padding is symmetric and non-negative.
    px0, px1, py0, py1, pz0, pz1 = pad
    if px0 == px1 and py0 == py1 and pz0 == pz1 and min(pad) >= 0:
        return _conv3d(x, w, padding=[pz0, py0, px0], groups=groups, flip_weight=flip_weight)
    return conv3d_resample_generic(x, w, f, up, down, padding, groups, flip_weight, flip_filter)


def _conv_up(x: torch.Tensor, w: torch.Tensor, f_up: FilterLike, f_down: FilterLike, up, down, pad,
             groups: int, flip_weight: bool, flip_filter: bool, up_gain: float) -> torch.Tensor:
    """Transposed convolution with stride = up, FIR filter with what is left of the padding, optional down."""
    ksize = (w.shape[4], w.shape[3], w.shape[2])  # x, y, z
    # A transposed conv is a full true convolution of the zero-inserted input; cropping [k - 1 - p0,
    # k - up - p1] of it gives the valid correlation of the padded input. The common non-negative crop is the
    # transposed conv's own padding; the rest (negative = pad) goes to the filter.
    crop = [(ksize[a] - 1 - pad[2 * a], ksize[a] - up[a] - pad[2 * a + 1]) for a in range(3)]
    conv_pad = [max(min(c0, c1), 0) for c0, c1 in crop]
    rest = []
    for axis in range(3):
        rest += [conv_pad[axis] - crop[axis][0], conv_pad[axis] - crop[axis][1]]
    x = _conv3d(x, _transpose_weight(w, groups), stride=_zyx(up), padding=_zyx(conv_pad), groups=groups,
                transpose=True, flip_weight=not flip_weight)
    x = upfirdn3d.upfirdn3d(x, f_up, padding=rest, gain=up_gain, flip_filter=flip_filter)
    if max(down) > 1:
        x = upfirdn3d.upfirdn3d(x, f_down, down=down, flip_filter=flip_filter)
    return x


def conv3d_resample_generic(x: torch.Tensor, w: torch.Tensor, f: FilterLike = None, up: IntXYZ = 1,
                            down: IntXYZ = 1, padding: IntXYZ = 0, groups: int = 1, flip_weight: bool = True,
                            flip_filter: bool = False) -> torch.Tensor:
    r"""The defining chain upfirdn3d(up, padding) -> conv3d -> upfirdn3d(down); same arguments as conv3d_resample.

    Slow but obviously right: conv3d_resample's fast paths are tested against it.
    """
    up = upfirdn3d.parse_xyz(up, 'up')
    down = upfirdn3d.parse_xyz(down, 'down')
    f_up = upfirdn3d.select_axes(f, up)
    f_down = upfirdn3d.select_axes(f, down)
    pad = _total_padding(upfirdn3d.parse_padding(padding), f_up, f_down, up, down)
    x = upfirdn3d.upfirdn3d(x, f_up if max(up) > 1 else None, up=up, padding=pad, gain=float(np.prod(up)),
                            flip_filter=flip_filter)
    x = _conv3d(x, w, groups=groups, flip_weight=flip_weight)
    if max(down) > 1:
        x = upfirdn3d.upfirdn3d(x, f_down, down=down, flip_filter=flip_filter)
    return x
