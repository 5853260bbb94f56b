# SPDX-License-Identifier: Apache-2.0
"""The anisotropic block schedule: how a volume of D x H x W voxels is grown from a small learned constant.

Each axis a has size S_a = b_a * 2^k_a, where b_a is the size of the learned constant along that axis and k_a the
number of blocks in which the axis doubles:

* K, the number of up-sampling blocks, is the largest k for which S_max / 2^k is an integer >= 4 (S_max is the
  largest axis).
* k_a = min(K, the largest k for which S_a / 2^k is an integer >= 3).
* An axis with k_a < K doubles in the first k_a blocks (depth_schedule 'early') or in the last k_a (``'late'``).
* The channels of a block are min(channel_base // r, channel_max), r = the block's largest in-plane size
  (max(H, W)), so a 256x256x24 network has the channels of the 2D 256 network.

The rule alone would accept any size >= 4 by choosing K = 0 (one block at full size, e.g. 255x255x24). So the
automatic factorisation also requires every base size to be at most 7: an axis must be 3 or b * 2^k with
b in 4..7. Sizes outside that set are rejected with the nearest valid sizes; an explicit `base` overrides it.

Orders (volumes/contract.py owns them): shapes are (D, H, W) tuples, the tensor order; text is XxYxZ; per-block
up-sampling factors (`VolumeSchedule.block_up`) are in x, y, z order (W, H, D), as the upfirdn3d ops take them.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from volumes.contract import dhw_to_xyz, format_size

_MAX_BASE = 7  # Largest automatic base size along any axis.
_MIN_BASE_MAX_AXIS = 4  # The largest axis starts at 4..7, as the 2D network starts at 4x4.
_MIN_BASE = 3  # Other axes may start at 3 (e.g. 24 slices = 3 * 2^3).

def _as_shape(shape: Sequence[int], name: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(v) for v in shape)
    except (TypeError, ValueError):
        raise ValueError(f'{name}: expected three positive integers (D, H, W), got {shape!r}') from None
    if len(values) != 3 or any(v <= 0 for v in values) or any(v != s for v, s in zip(values, shape)):
        raise ValueError(f'{name}: expected three positive integers (D, H, W), got {shape!r}')
    return values

#----------------------------------------------------------------------------
# Factorisation of one axis.


def _doublings(size: int, min_base: int) -> int:
    """The largest k for which size / 2^k is an integer >= min_base (-1 if size < min_base)."""
    if size < min_base:
        return -1
    k = 0
    while size % (2 ** (k + 1)) == 0 and size // 2 ** (k + 1) >= min_base:
        k += 1
    return k


def _is_valid_size(size: int, largest: bool) -> bool:
    # The automatic rule works for exactly these sizes: 3 (not on the largest axis) or b * 2^k with b in 4..7.
    if size == _MIN_BASE:
        return not largest
    k = _doublings(size, _MIN_BASE_MAX_AXIS)
    return k >= 0 and size // 2 ** k <= _MAX_BASE


def _nearest_valid(size: int, largest: bool) -> tuple[int, ...]:
    below = next((s for s in range(size - 1, 2, -1) if _is_valid_size(s, largest)), None)
    above = next(s for s in range(size + 1, 2 * size + 8) if _is_valid_size(s, largest))
    return tuple(s for s in (below, above) if s is not None)


def _check_factorises(img_shape: tuple[int, int, int]) -> None:
    largest_idx = max(reversed(range(3)), key=lambda i: img_shape[i])  # One largest axis, X before Y before Z.
    problems = []
    for idx, (axis, size) in enumerate(zip('ZYX', img_shape)):
        is_largest = idx == largest_idx
        if not _is_valid_size(size, is_largest):
            nearest = ' or '.join(str(s) for s in _nearest_valid(size, is_largest))
            problems.append(f'{axis}={size} (nearest valid: {nearest})')
    if problems:
        raise ValueError(f'volume size {format_size(img_shape)} does not factor as base * 2^k per axis: K = the '
                         f'largest k with S_max / 2^k an integer >= 4, k_a = min(K, largest k with S_a / 2^k an '
                         f'integer >= 3), and every base size must be at most {_MAX_BASE}; '
                         f'{", ".join(reversed(problems))}; or give an explicit base')

#----------------------------------------------------------------------------
# The schedule.


@dataclasses.dataclass(frozen=True)
class VolumeSchedule:
    """Per-block shapes, up-sampling factors and channel counts of a synthesis network (mirrored by D).

    Attributes:
        img_shape: the output volume, (D, H, W).
        base_shape: the learned constant, (D, H, W).
        num_blocks: K, the number of up-sampling blocks (the network has K + 1 blocks; block 0 is the base).
        axis_doublings: k_a per axis, (k_D, k_H, k_W).
        block_shapes: (D, H, W) at the output of each block; block 0 is the base, block K the image.
        block_up: per-block up-sampling factors in x, y, z order (W, H, D); block 0 has (1, 1, 1).
        block_channels: feature channels of each block.
        depth_schedule: 'early' or 'late'.
    """

    img_shape: tuple[int, int, int]
    base_shape: tuple[int, int, int]
    num_blocks: int
    axis_doublings: tuple[int, int, int]
    block_shapes: tuple[tuple[int, int, int], ...]
    block_up: tuple[tuple[int, int, int], ...]
    block_channels: tuple[int, ...]
    depth_schedule: str

    def describe(self) -> str:
        """A table with one row per block (its size XxYxZ, up-sampling factors x,y,z, channels, the axes that
        double in it) and a line saying where the shortest axis reaches its full size."""
        rows = [('block', 'size XxYxZ', 'up x,y,z', 'channels', 'doubles')]
        for idx, (shape, up, ch) in enumerate(zip(self.block_shapes, self.block_up, self.block_channels)):
            doubles = ' '.join(axis for axis, u in zip('xyz', up) if u == 2) or ('(base)' if idx == 0 else '-')
            rows.append((str(idx), format_size(shape), ','.join(str(u) for u in up), str(ch), doubles))
        widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
        lines = ['  '.join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, '  '.join('-' * width for width in widths))
        return '\n'.join(lines + [self.depth_note()])

    def depth_note(self) -> str:
        """Where the axis with the fewest doublings reaches its full size, in words."""
        axis = min(range(3), key=lambda a: (self.axis_doublings[a], -a))  # (D, H, W) index; ties: the depth.
        k = self.axis_doublings[axis]
        name = 'xyz'[2 - axis]
        if k == self.num_blocks:
            return f'Every axis doubles in every block ({self.num_blocks} blocks).'
        full = next(i for i, shape in enumerate(self.block_shapes) if shape[axis] == self.img_shape[axis])
        in_plane = 'x'.join(str(s) for s in dhw_to_xyz(self.block_shapes[full])[:2])
        blocks = f'blocks {full - k + 1}-{full}' if k > 1 else (f'block {full}' if k == 1 else 'no block')
        return (f'{name} ({self.img_shape[axis]}) doubles in {blocks} (depth schedule "{self.depth_schedule}"): '
                f'full size from block {full}, at {in_plane} in-plane.')


def _base_from_override(img_shape: tuple[int, int, int], base: Sequence[int]) -> tuple[list[int], int]:
    base = _as_shape(base, 'base')
    doublings = []
    for axis, size, b in zip('ZYX', img_shape, base):
        ratio = size // b
        if size % b != 0 or ratio & (ratio - 1) != 0:
            raise ValueError(f'base {format_size(base)}: the volume size {format_size(img_shape)} must be the base '
                             f'times a power of two per axis; {axis}={size} is not {b} * 2^k')
        doublings.append(ratio.bit_length() - 1)
    return doublings, max(doublings)


def _block_up(doublings: Sequence[int], num_blocks: int, depth_schedule: str) -> list[tuple[int, int, int]]:
    ups = [(1, 1, 1)]
    for block in range(1, num_blocks + 1):
        # 'early': an axis doubles in blocks 1..k_a; 'late': in blocks K-k_a+1..K.
        k_d, k_h, k_w = (2 if _doubles_in(block, k, num_blocks, depth_schedule) else 1 for k in doublings)
        ups.append(dhw_to_xyz((k_d, k_h, k_w)))
    return ups


def _doubles_in(block: int, k: int, num_blocks: int, depth_schedule: str) -> bool:
    return block <= k if depth_schedule == 'early' else block > num_blocks - k


def make_schedule(img_shape: Sequence[int], base: Sequence[int] | None = None, depth_schedule: str = 'early',
                  channel_base: int = 32768, channel_max: int = 512) -> VolumeSchedule:
    """Factor a volume shape into a learned-constant size and per-block up-sampling steps.

    Args:
        img_shape: the volume, (D, H, W).
        base: optional override of the learned constant's size, (bD, bH, bW); each axis of img_shape must be the
            base times a power of two. None applies the automatic rule (module docstring).
        depth_schedule: 'early' (an axis with fewer doublings than K doubles in the first blocks) or 'late'.
        channel_base: channels of a block = min(channel_base // max(H, W), channel_max).
        channel_max: see channel_base.

    Returns:
        The VolumeSchedule.

    Raises:
        ValueError: a shape that does not factor, a base that does not divide it, or a bad option.
    """
    img_shape = _as_shape(img_shape, 'img_shape')
    if depth_schedule not in ('early', 'late'):
        raise ValueError(f'depth_schedule: expected "early" or "late", got {depth_schedule!r}')
    if int(channel_base) <= 0 or int(channel_max) <= 0:
        raise ValueError(f'channel_base and channel_max must be positive, got {channel_base} and {channel_max}')
    if base is None:
        _check_factorises(img_shape)
        num_blocks = _doublings(max(img_shape), _MIN_BASE_MAX_AXIS)
        doublings = [min(num_blocks, _doublings(size, _MIN_BASE)) for size in img_shape]
    else:
        doublings, num_blocks = _base_from_override(img_shape, base)
    base_shape = tuple(size // 2 ** k for size, k in zip(img_shape, doublings))
    block_up = _block_up(doublings, num_blocks, depth_schedule)
    shapes = [base_shape]
    for up_w, up_h, up_d in block_up[1:]:
        d, h, w = shapes[-1]
        shapes.append((d * up_d, h * up_h, w * up_w))
    channels = tuple(min(int(channel_base) // max(h, w), int(channel_max)) for _, h, w in shapes)
    if min(channels) <= 0:
        raise ValueError(f'channel_base {channel_base} gives 0 channels at in-plane size {max(img_shape[1:])}; '
                         f'it must be at least the largest in-plane size')
    return VolumeSchedule(img_shape=img_shape, base_shape=base_shape, num_blocks=num_blocks,
                          axis_doublings=tuple(doublings), block_shapes=tuple(shapes), block_up=tuple(block_up),
                          block_channels=channels, depth_schedule=depth_schedule)
