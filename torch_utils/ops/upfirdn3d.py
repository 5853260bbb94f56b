# SPDX-License-Identifier: Apache-2.0
"""Up-sample, pad, FIR-filter and down-sample 3D volumes `[N, C, D, H, W]` in one op (upfirdn3d).

Per axis the op follows scipy.signal.upfirdn: insert `up - 1` zeros after every sample, pad (negative values
crop; padding is relative to the up-sampled signal), convolve with the FIR filter keeping only outputs whose
footprint lies inside the padded signal (a true convolution unless `flip_filter`), and keep every `down`-th
sample. The output size per axis is `(in * up + pad0 + pad1 - fsize + down) // down`.

Per-axis values are written in x, y, z order (W, H, D), like the official 2D op takes x, y. A filter may be
  - None: the identity;
  - a 1D tensor: applied separably along all three axes (three 1D passes, each with gain^(1/3));
  - a list of three 1D tensors in x, y, z order, where None leaves that axis unfiltered;
  - a 3D tensor `[fz, fy, fx]`: one non-separable pass.
`gain` always applies once overall.

Two implementations give the same result: a pure-PyTorch reference (`impl='ref'`, any device; derivatives of
any order by autograd) and a CUDA plugin (`impl='cuda'` on a CUDA tensor), whose autograd.Function computes its
gradient with another upfirdn3d, so first and second derivatives work there too.

The helpers setup_filter, filter3d, upsample3d and downsample3d generalise the official 2D helpers to 3 axes.
"""

from __future__ import annotations

import math
import os
from numbers import Number
from typing import Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import custom_ops, misc, ops

# A filter as the public functions accept it (see the module docstring).
FilterLike = Union[None, torch.Tensor, Sequence]
IntXYZ = Union[int, Sequence[int]]

_AXIS_DIM = (4, 3, 2)  # Tensor dimension of the x, y and z axes in [N, C, D, H, W].

#----------------------------------------------------------------------------
# Plugin loading.

_plugin = None


def _init() -> bool:
    """Build and load the CUDA plugin on first use; a failed build raises (no silent fallback)."""
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin('upfirdn3d_plugin', sources=['upfirdn3d.cpp', 'upfirdn3d.cu'],
                                        headers=['upfirdn3d.h'], source_dir=os.path.dirname(__file__))
    return True

#----------------------------------------------------------------------------
# Argument parsing.


def parse_xyz(value: IntXYZ, name: str) -> tuple[int, int, int]:
    """An int or an x, y, z 3-list of ints >= 1."""
    values = [value] * 3 if isinstance(value, (int, np.integer)) else list(value)
    if len(values) != 3 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in values):
        raise ValueError(f'{name} must be an int >= 1 or a list of three ints >= 1 (x, y, z), got {value!r}')
    return tuple(int(v) for v in values)


def parse_padding(padding: IntXYZ) -> tuple[int, int, int, int, int, int]:
    """An int, a symmetric [px, py, pz] or an explicit [x0, x1, y0, y1, z0, z1]."""
    values = [padding] if isinstance(padding, (int, np.integer)) else list(padding)
    if not all(isinstance(v, (int, np.integer)) for v in values) or len(values) not in (1, 3, 6):
        raise ValueError(f'padding must be an int, [px, py, pz] or [x0, x1, y0, y1, z0, z1] of ints, got {padding!r}')
    if len(values) == 1:
        values = values * 6
    elif len(values) == 3:
        values = [values[0], values[0], values[1], values[1], values[2], values[2]]
    return tuple(int(v) for v in values)


def _gain_per_pass(gain: float, count: int) -> list[float]:
    """Split `gain` over `count` passes whose gains multiply to it; a negative sign goes to the first pass only
    (a fractional power of a negative number would be complex)."""
    if count == 0:
        return []
    root = abs(gain) ** (1 / count)
    return [math.copysign(root, gain)] + [root] * (count - 1)


def _is_number(value) -> bool:
    return isinstance(value, Number) or (isinstance(value, torch.Tensor) and value.ndim == 0)


def _is_per_axis(f) -> bool:
    """True for a list of three per-axis filters (as opposed to a list of taps)."""
    return isinstance(f, (list, tuple)) and len(f) == 3 and not any(_is_number(v) for v in f)


def _check_filter(f: FilterLike) -> FilterLike:
    """Validate `f` and return it as None, a 1D or 3D tensor, or a list of three (1D tensor | None)."""
    if f is None:
        return None
    if _is_per_axis(f):
        axes = [None if v is None else torch.as_tensor(v) for v in f]
        if any(v is not None and (v.ndim != 1 or v.numel() == 0) for v in axes):
            raise ValueError('a per-axis filter list must hold three 1D filters or None, in x, y, z order')
        return axes
    f = torch.as_tensor(f)
    if f.ndim not in (1, 3) or f.numel() == 0:
        raise ValueError(f'f must be None, a 1D filter, a list of three 1D filters (x, y, z) or a 3D filter '
                         f'[fz, fy, fx]; got a tensor of shape {list(f.shape)}')
    return f


def filter_sizes(f: FilterLike) -> tuple[int, int, int]:
    """Filter taps along x, y, z (1 for an unfiltered axis)."""
    if f is None:
        return (1, 1, 1)
    if isinstance(f, (list, tuple)):
        return tuple(1 if v is None else int(v.shape[0]) for v in f)
    if f.ndim == 1:
        return (int(f.shape[0]),) * 3
    return (int(f.shape[2]), int(f.shape[1]), int(f.shape[0]))


def select_axes(f: FilterLike, factors: Sequence[int]) -> FilterLike:
    """Restrict a 1D filter to the axes whose resampling factor is > 1; other filter forms are used as given."""
    f = _check_filter(f)
    if isinstance(f, torch.Tensor) and f.ndim == 1:
        return [f if factor > 1 else None for factor in factors]
    return f


def _output_sizes(x: torch.Tensor, fsizes, up, down, padding) -> tuple[int, int, int]:
    """Output sizes along x, y, z; a clear error when one would be <= 0."""
    out = []
    for axis, name in enumerate('xyz'):
        size = x.shape[_AXIS_DIM[axis]]
        padded = size * up[axis] + padding[2 * axis] + padding[2 * axis + 1]
        out_size = (padded - fsizes[axis] + down[axis]) // down[axis]
        if out_size <= 0:
            raise ValueError(f'upfirdn3d: output size along {name} would be {out_size} (input {size}, up '
                             f'{up[axis]}, padding {padding[2 * axis:2 * axis + 2]}, filter {fsizes[axis]} taps, '
                             f'down {down[axis]}); it must be >= 1')
        out.append(out_size)
    return tuple(out)


def _check_input(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 5 or not x.is_floating_point():
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f'upfirdn3d: x must be a floating-point tensor [N, C, D, H, W], got {shape}')

#----------------------------------------------------------------------------
# Filter set-up.


def setup_filter(f: FilterLike, device: torch.device | str = torch.device('cpu'), normalize: bool = True,
                 flip_filter: bool = False, gain: float = 1, separable: bool | None = None) -> FilterLike:
    r"""Convert a filter to the float32 form upfirdn3d takes.

    Unlike the official 2D helper, a 1D filter stays 1D (it always runs separably in 3D) unless
    `separable=False`, which turns it into the 3D outer product `f x f x f`.

    Gain rule: the returned filter has DC gain `gain` when used as intended. A 1D filter is meant for all three
    axes, so it is scaled by gain^(1/3); a 3D filter by gain; a per-axis list spreads gain evenly over its
    filters (gain^(1/k) each for k filters). Either way the product of the DC gains of the passes is `gain`
    (a negative gain uses real roots of |gain|, with signs whose product is that of `gain`).

    Args:
        f: None (identity), a 1D/3D array-like, or a list of three 1D filters (x, y, z; None = unfiltered).
        device: where the result lives.
        normalize: scale each filter so its taps sum to 1.
        flip_filter: flip the taps (turns the op's convolution into a correlation, and back).
        gain: overall DC gain (see above).
        separable: False makes a 1D filter 3D; True insists on a separable result (a 3D filter is an error).

    Returns:
        A float32 tensor (1D or 3D [fz, fy, fx]) or a list of three (1D tensor | None).
    """
    if _is_per_axis(f):
        filters = _check_filter(f)
        gains = iter(_gain_per_pass(gain, sum(v is not None for v in filters)))
        return [None if v is None else setup_filter(v, device, normalize, flip_filter, 1, True) * next(gains)
                for v in filters]
    f = torch.as_tensor(1.0 if f is None else f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[np.newaxis]
    f = _check_filter(f)
    if separable is False and f.ndim == 1:
        f = f[:, None, None] * f[None, :, None] * f[None, None, :]  # [fz, fy, fx]
    if separable is True and f.ndim == 3:
        raise ValueError('setup_filter: a 3D filter cannot be made separable (separable=True)')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain if f.ndim == 3 else _gain_per_pass(gain, 3)[0])  # A 1D filter's third power has sign(gain).
    return f.to(device=device)

#----------------------------------------------------------------------------
# Public ops.


def upfirdn3d(x: torch.Tensor, f: FilterLike, up: IntXYZ = 1, down: IntXYZ = 1, padding: IntXYZ = 0,
              flip_filter: bool = False, gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    r"""Up-sample, pad, FIR-filter and down-sample a batch of volumes.

    Args:
        x: input [N, C, D, H, W], any floating dtype and memory format.
        f: None, a 1D filter (separable along x, y and z), a list of three 1D filters (x, y, z; None =
            unfiltered), or a 3D filter [fz, fy, fx]; usually from setup_filter().
        up: up-sampling factor, an int or [ux, uy, uz].
        down: down-sampling factor, an int or [dx, dy, dz].
        padding: an int, [px, py, pz] or [x0, x1, y0, y1, z0, z1], relative to the up-sampled volume;
            negative values crop.
        flip_filter: False: true convolution; True: correlation.
        gain: overall signal gain.
        impl: 'cuda' (the plugin on CUDA tensors, the reference elsewhere) or 'ref'.

    Returns:
        [N, C, D', H', W'] with, per axis, size (in * up + pad0 + pad1 - fsize + down) // down.
    """
    if impl not in ('cuda', 'ref'):
        raise ValueError(f"impl must be 'cuda' or 'ref', got {impl!r}")
    _check_input(x)
    f = _check_filter(f)
    up, down, padding = parse_xyz(up, 'up'), parse_xyz(down, 'down'), parse_padding(padding)
    _output_sizes(x, filter_sizes(f), up, down, padding)
    if impl == 'cuda' and ops.plugins_active() and x.device.type == 'cuda' and _init():
        return _upfirdn3d_cuda_apply(x, f, up, down, padding, bool(flip_filter), float(gain))
    return _upfirdn3d_ref(x, f, up, down, padding, bool(flip_filter), float(gain))


def filter3d(x: torch.Tensor, f: FilterLike, padding: IntXYZ = 0, flip_filter: bool = False, gain: float = 1,
             impl: str = 'cuda') -> torch.Tensor:
    r"""Filter a volume, keeping its shape: each filtered axis is padded by [f // 2, (f - 1) // 2].

    A 1D filter runs along all three axes. Extra `padding` (int, [px, py, pz] or 6-list) is added on top.
    """
    f = _check_filter(f)
    padding = parse_padding(padding)
    fsizes = filter_sizes(f)
    pad = []
    for axis in range(3):
        pad += [padding[2 * axis] + fsizes[axis] // 2, padding[2 * axis + 1] + (fsizes[axis] - 1) // 2]
    return upfirdn3d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample3d(x: torch.Tensor, f: FilterLike, up: IntXYZ = 2, padding: IntXYZ = 0, flip_filter: bool = False,
               gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    r"""Up-sample by zero insertion and FIR filtering; a constant volume stays constant away from the borders.

    A 1D filter is applied only along the axes with up > 1 (up=[2, 2, 1] leaves z unfiltered and unpadded); a
    per-axis list or a 3D filter is used as given. Each filtered axis is padded by [(f + up - 1) // 2,
    (f - up) // 2] plus `padding`; the gain is multiplied by ux * uy * uz to keep the DC level.
    """
    up = parse_xyz(up, 'up')
    f = select_axes(f, up)
    padding = parse_padding(padding)
    fsizes = filter_sizes(f)
    pad = []
    for axis in range(3):
        fs, u = fsizes[axis], up[axis]
        pad += [padding[2 * axis] + (fs + u - 1) // 2, padding[2 * axis + 1] + (fs - u) // 2]
    return upfirdn3d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * float(np.prod(up)), impl=impl)


def downsample3d(x: torch.Tensor, f: FilterLike, down: IntXYZ = 2, padding: IntXYZ = 0, flip_filter: bool = False,
                 gain: float = 1, impl: str = 'cuda') -> torch.Tensor:
    r"""FIR-filter and decimate; a constant volume stays constant away from the borders.

    A 1D filter is applied only along the axes with down > 1; a per-axis list or a 3D filter is used as given.
    Each filtered axis is padded by [(f - down + 1) // 2, (f - down) // 2] plus `padding`.
    """
    down = parse_xyz(down, 'down')
    f = select_axes(f, down)
    padding = parse_padding(padding)
    fsizes = filter_sizes(f)
    pad = []
    for axis in range(3):
        fs, d = fsizes[axis], down[axis]
        pad += [padding[2 * axis] + (fs - d + 1) // 2, padding[2 * axis + 1] + (fs - d) // 2]
    return upfirdn3d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)

#----------------------------------------------------------------------------
# Reference implementation. A 1D pass is a polyphase FIR filter: each output sample is a weighted sum of a few
# input samples, computed as fused multiply-adds of (strided) slices of the input, so no zeros are inserted,
# padding and crops are only index ranges, and no convolution runs (on the CPU a depthwise conv3d with a 1D
# kernel is 4-5x slower, a one-channel conv2d over N*C*D folded into the batch far slower still). The op is wrapped
# in an autograd.Function that saves nothing of x: its backward is the adjoint upfirdn3d, the same Function with
# up and down swapped, so derivatives of any order work without keeping the activations of the passes.


def _pad_axis(x: torch.Tensor, axis: int, pad0: int, pad1: int) -> torch.Tensor:
    """Pad (or crop, when negative) along one axis; grow first so a crop larger than the input still works."""
    grow = [0, 0] * axis + [max(pad0, 0), max(pad1, 0)]
    crop = [0, 0] * axis + [min(pad0, 0), min(pad1, 0)]
    if any(grow):
        x = F.pad(x, grow)
    if any(crop):
        x = F.pad(x, crop)
    return x


def _zero_insert(x: torch.Tensor, axis: int, up: int) -> torch.Tensor:
    """Insert up - 1 zeros after every sample along one axis."""
    if up == 1:
        return x
    dim = _AXIS_DIM[axis]
    x = x.unsqueeze(dim + 1)  # e.g. x axis: [N, C, D, H, W, 1]
    x = F.pad(x, [0, 0] * axis + [0, up - 1])  # [N, C, D, H, W, up]
    return x.flatten(dim, dim + 1)  # [N, C, D, H, W * up]


def _strided_slice(x: torch.Tensor, dim: int, start: int, count: int, step: int) -> torch.Tensor:
    """Elements start, start + step, ... (count of them) along `dim`, as a view."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, start + (count - 1) * step + 1, step)
    return x[tuple(index)]


def _phase_terms(num_taps: int, up: int, down: int, pad0: int) -> list[list[tuple[int, int]]]:
    """For each output phase q (outputs q, q + P, q + 2P, ... with P = up / gcd(up, down)): the (tap, input offset)
    pairs that land on a nonzero sample of the zero-inserted, padded signal.

    Output m reads padded sample m * down + s for correlation tap s, which is input sample
    (m * down + s - pad0) / up when that divides; within a phase the offset grows by down / gcd per output.
    """
    period = up // math.gcd(up, down)
    phases = []
    for q in range(period):
        phases.append([(s, (q * down + s - pad0) // up) for s in range(num_taps) if (q * down + s - pad0) % up == 0])
    return phases


def _valid_range(offset: int, step: int, count: int, length: int) -> tuple[int, int]:
    """The outputs i in [0, count) whose input index offset + step * i lies inside [0, length)."""
    first = min(max(-(offset // step), 0), count)  # ceil(-offset / step), clipped.
    stop = min(max(-((offset - length) // step), 0), count)  # ceil((length - offset) / step), clipped.
    return first, max(stop, first)


def _ref_pass_1d(x: torch.Tensor, axis: int, f: torch.Tensor | None, up: int, down: int, pad0: int, pad1: int,
                 flip_filter: bool, gain: float) -> torch.Tensor:
    """One upfirdn pass along one axis (f None: no filtering, and `gain` is not applied).

    The output is allocated once and each phase writes its interleaved samples into it directly; taps that fall
    on the zero padding are skipped, so no padded copy is made.
    """
    dim = _AXIS_DIM[axis]
    length = x.shape[dim]
    if f is None:
        if up == 1 and down == 1 and pad0 == 0 and pad1 == 0:
            return x
        taps = torch.ones([1], dtype=x.dtype, device=x.device)
    else:
        taps = f.to(device=x.device, dtype=x.dtype)
        taps = taps if flip_filter else taps.flip(0)  # Correlation order: output m reads taps[s] * padded[m*down + s].
        taps = taps * gain if gain != 1 else taps
    out_len = (length * up + pad0 + pad1 - taps.shape[0] + down) // down
    step = down // math.gcd(up, down)
    phases = _phase_terms(taps.shape[0], up, down, pad0)
    count = -(-out_len // len(phases))  # Outputs per phase; the last phases may compute one extra.
    if torch.is_grad_enabled() and (x.requires_grad or taps.requires_grad):
        return _pass_by_autograd(x, dim, taps, phases, step, count, out_len)
    shape = list(x.shape)
    shape[dim] = count * len(phases)
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    grouped = y.unflatten(dim, (count, len(phases)))  # e.g. x axis: [N, C, D, H, count, P]
    for q, terms in enumerate(phases):
        _accumulate_phase(grouped.select(dim + 1, q), x, dim, taps, terms, step, count, length)
    return y if y.shape[dim] == out_len else y.narrow(dim, 0, out_len)


def _pass_by_autograd(x: torch.Tensor, dim: int, taps: torch.Tensor, phases, step: int, count: int,
                      out_len: int) -> torch.Tensor:
    """The same pass from out-of-place ops only, for autograd (a filter that requires grad)."""
    offsets = [offset for terms in phases for _, offset in terms]
    lo = max(0, -min(offsets, default=0))
    hi = max(0, max(offsets, default=0) + step * (count - 1) - (x.shape[dim] - 1))
    x = F.pad(x, [0, 0] * (x.ndim - 1 - dim) + [lo, hi])  # The border zeros some output reads.
    outputs = []
    for terms in phases:
        parts = [_strided_slice(x, dim, offset + lo, count, step) * taps[s] for s, offset in terms]
        shape = list(x.shape)
        shape[dim] = count
        outputs.append(sum(parts[1:], parts[0]) if parts else x.new_zeros(shape))
    y = torch.stack(outputs, dim=dim + 1).flatten(dim, dim + 1)  # Interleave the phases along `dim`.
    return y.narrow(dim, 0, out_len)


def _accumulate_phase(out: torch.Tensor, x: torch.Tensor, dim: int, taps: torch.Tensor, terms, step: int, count: int,
                      length: int) -> None:
    """out[i] = sum over (tap s, offset) of taps[s] * x[offset + step * i], reading zero outside x.

    The core, where every term reads inside x, is written by one multiply and fused multiply-adds; only the
    border outputs, some of whose taps read the padding, are zeroed and accumulate the terms that reach x.
    """
    ranges = [_valid_range(offset, step, count, length) for _, offset in terms]
    core = (max((r[0] for r in ranges), default=0), min((r[1] for r in ranges), default=0))
    if dim == x.ndim - 1 and core != (0, count):
        # Along the innermost axis a border is a column of single elements, slow to touch: zero the whole
        # output once and let every term add over its own valid range instead.
        core = (0, 0)
    if core[1] > core[0]:
        first, stop = core
        for k, (s, offset) in enumerate(terms):
            part = _strided_slice(x, dim, offset + first * step, stop - first, step)
            if k == 0:
                torch.mul(part, taps[s], out=out.narrow(dim, first, stop - first))
            else:
                out.narrow(dim, first, stop - first).addcmul_(part, taps[s])
        borders = [(0, first), (stop, count)]
    else:
        borders = [(0, count)]
    for lo, hi in borders:
        if hi <= lo:
            continue
        out.narrow(dim, lo, hi - lo).zero_()
        for (s, offset), (first, stop) in zip(terms, ranges):
            first, stop = max(first, lo), min(stop, hi)
            if stop > first:
                part = _strided_slice(x, dim, offset + first * step, stop - first, step)
                out.narrow(dim, first, stop - first).addcmul_(part, taps[s])


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last_3d if x.ndim == 5 and not x.is_contiguous() and \
        x.is_contiguous(memory_format=torch.channels_last_3d) else torch.contiguous_format


def _ref_full(x: torch.Tensor, f: torch.Tensor, up, down, padding, flip_filter: bool, gain: float) -> torch.Tensor:
    """A non-separable 3D filter: zero insertion and padding, then one depthwise conv3d."""
    for axis in range(3):
        x = _zero_insert(x, axis, up[axis])
        x = _pad_axis(x, axis, padding[2 * axis], padding[2 * axis + 1])
    w = f.to(device=x.device, dtype=x.dtype)
    w = w if flip_filter else w.flip([0, 1, 2])  # conv3d correlates: flip for a true convolution.
    w = w * gain if gain != 1 else w
    w = w[np.newaxis, np.newaxis].repeat(x.shape[1], 1, 1, 1, 1)  # [C, 1, fz, fy, fx]
    return F.conv3d(x, w, stride=[down[2], down[1], down[0]], groups=x.shape[1])


def _ref_forward(x: torch.Tensor, f: FilterLike, up, down, padding, flip_filter: bool, gain: float) -> torch.Tensor:
    """The reference computation on parsed arguments; differentiable by autograd (also with respect to f)."""
    if isinstance(f, torch.Tensor) and f.ndim == 3:
        return _ref_full(x, f, up, down, padding, flip_filter, gain)
    filters = list(f) if isinstance(f, (list, tuple)) else [f] * 3
    gains = iter(_gain_per_pass(gain, sum(v is not None for v in filters)))
    # Shrinking axes first keeps the intermediate volumes small.
    for axis in sorted(range(3), key=lambda a: up[a] / down[a]):
        pass_gain = 1 if filters[axis] is None else next(gains)
        x = _ref_pass_1d(x, axis, filters[axis], up[axis], down[axis], padding[2 * axis], padding[2 * axis + 1],
                         flip_filter, pass_gain)
    if all(v is None for v in filters) and gain != 1:
        x = x * gain
    return x


def _adjoint_padding(in_shape, out_shape, fsizes, up, down, padding) -> tuple[int, ...]:
    """Padding of the adjoint upfirdn3d (up and down swapped, filter flipped) that maps dy back onto x's shape."""
    bpad = []
    for axis in range(3):
        size_in, size_out = in_shape[_AXIS_DIM[axis]], out_shape[_AXIS_DIM[axis]]
        p0 = padding[2 * axis]
        bpad += [fsizes[axis] - p0 - 1, size_in * up[axis] - size_out * down[axis] + p0 - up[axis] + 1]
    return tuple(bpad)


_ref_functions: dict[tuple, type] = {}


def _upfirdn3d_ref_function(full: bool, up, down, padding, flip_filter: bool, gain: float) -> type:
    """The autograd.Function of the reference path for one static configuration (cached)."""
    key = (full, up, down, padding, flip_filter, gain)
    if key in _ref_functions:
        return _ref_functions[key]

    class Upfirdn3dRef(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *filters):  # pylint: disable=arguments-differ
            ctx.save_for_backward(*filters)  # Constants; x itself is not needed by the linear backward.
            ctx.in_shape = x.shape
            f = filters[0] if full else list(filters)
            return _ref_forward(x, f, up, down, padding, flip_filter, gain)

        @staticmethod
        def backward(ctx, dy):  # pylint: disable=arguments-differ
            filters = ctx.saved_tensors
            dx = None
            if ctx.needs_input_grad[0]:
                fsizes = filter_sizes(filters[0] if full else list(filters))
                bpad = _adjoint_padding(ctx.in_shape, dy.shape, fsizes, up, down, padding)
                dx = _upfirdn3d_ref_function(full, down, up, bpad, not flip_filter, gain).apply(dy, *filters)
            return (dx,) + (None,) * len(filters)

    _ref_functions[key] = Upfirdn3dRef
    return Upfirdn3dRef


@misc.profiled_function
def _upfirdn3d_ref(x: torch.Tensor, f: FilterLike, up, down, padding, flip_filter: bool,
                   gain: float) -> torch.Tensor:
    """Pure-PyTorch upfirdn3d on already parsed arguments."""
    full = isinstance(f, torch.Tensor) and f.ndim == 3
    filters = (f,) if full else (tuple(f) if isinstance(f, (list, tuple)) else (f, f, f))
    if torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in filters):
        return _ref_forward(x, f, up, down, padding, flip_filter, gain)  # A learned filter: plain autograd.
    return _upfirdn3d_ref_function(full, tuple(up), tuple(down), tuple(padding), flip_filter, gain).apply(x, *filters)

#----------------------------------------------------------------------------
# CUDA implementation: an autograd.Function per static configuration; its backward is upfirdn3d again.

_cuda_functions: dict[tuple, type] = {}


def _identity_pass(fsize: int, up: int, down: int, pad0: int, pad1: int) -> bool:
    return fsize == 1 and up == 1 and down == 1 and pad0 == 0 and pad1 == 0


def _kernel_filter(f: torch.Tensor | None, x: torch.Tensor, flip_filter: bool, ndim: int) -> torch.Tensor:
    """The taps the kernels read: correlation order, in the accumulation dtype, contiguous."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if f is None:
        return misc.constant(1.0, shape=[1] * ndim, dtype=dtype, device=x.device)
    f = f.to(device=x.device, dtype=dtype)
    return (f if flip_filter else f.flip(list(range(f.ndim)))).contiguous()


def _cuda_forward(x: torch.Tensor, filters: tuple, full: bool, up, down, padding, flip_filter: bool,
                  gain: float) -> torch.Tensor:
    """Run the kernels: one 3D pass for a full filter, else one 1D pass per non-identity axis."""
    if full:
        g = _kernel_filter(filters[0], x, flip_filter, 3)
        return _plugin.upfirdn3d_full(x, g, *up, *down, *padding, gain)
    sizes = filter_sizes(list(filters))
    passes = [a for a in range(3) if not _identity_pass(sizes[a], up[a], down[a], padding[2 * a], padding[2 * a + 1])]
    if not passes:
        return x * gain
    gains = _gain_per_pass(gain, len(passes))
    for axis, pass_gain in zip(sorted(passes, key=lambda a: up[a] / down[a]), gains):
        g = _kernel_filter(filters[axis], x, flip_filter, 1)
        x = _plugin.upfirdn3d_axis(x, g, _AXIS_DIM[axis], up[axis], down[axis], padding[2 * axis],
                                   padding[2 * axis + 1], pass_gain)
    return x


def _upfirdn3d_cuda(full: bool, up, down, padding, flip_filter: bool, gain: float) -> type:
    """The autograd.Function for one static configuration (cached)."""
    key = (full, up, down, padding, flip_filter, gain)
    if key in _cuda_functions:
        return _cuda_functions[key]

    class Upfirdn3dCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, *filters):  # pylint: disable=arguments-differ
            ctx.save_for_backward(*filters)
            ctx.in_shape = x.shape
            return _cuda_forward(x, filters, full, up, down, padding, flip_filter, gain)

        @staticmethod
        def backward(ctx, dy):  # pylint: disable=arguments-differ
            filters = ctx.saved_tensors
            fsizes = filter_sizes(filters[0] if full else list(filters))
            bpad = []
            for axis in range(3):
                size_in, size_out = ctx.in_shape[_AXIS_DIM[axis]], dy.shape[_AXIS_DIM[axis]]
                p0 = padding[2 * axis]
                bpad += [fsizes[axis] - p0 - 1, size_in * up[axis] - size_out * down[axis] + p0 - up[axis] + 1]
            dx = None
            if ctx.needs_input_grad[0]:
                fn = _upfirdn3d_cuda(full, down, up, tuple(bpad), not flip_filter, gain)
                dx = fn.apply(dy, *filters)
            return (dx,) + (None,) * len(filters)

    _cuda_functions[key] = Upfirdn3dCuda
    return Upfirdn3dCuda


def _upfirdn3d_cuda_apply(x: torch.Tensor, f: FilterLike, up, down, padding, flip_filter: bool,
                          gain: float) -> torch.Tensor:
    full = isinstance(f, torch.Tensor) and f.ndim == 3
    filters = (f,) if full else (tuple(f) if isinstance(f, (list, tuple)) else (f, f, f))
    return _upfirdn3d_cuda(full, up, down, padding, flip_filter, gain).apply(x, *filters)
