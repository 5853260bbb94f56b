# SPDX-License-Identifier: Apache-2.0
"""The anisotropic block schedule: the worked shapes of the design (256x256x24, 80x96x112, 32x32x32), errors, and size text round trips."""

from __future__ import annotations

import dataclasses

import pytest

from volumes.contract import format_size, parse_size
from training.volume_shape import make_schedule

# (size XxYxZ, base XxYxZ, K, per-block sizes for 'early', per-block sizes for 'late').
WORKED = [
    ('256x256x24', '4x4x3', 6,
     ['4x4x3', '8x8x6', '16x16x12', '32x32x24', '64x64x24', '128x128x24', '256x256x24'],
     ['4x4x3', '8x8x3', '16x16x3', '32x32x3', '64x64x6', '128x128x12', '256x256x24']),
    ('80x96x112', '5x6x7', 4,
     ['5x6x7', '10x12x14', '20x24x28', '40x48x56', '80x96x112'],
     ['5x6x7', '10x12x14', '20x24x28', '40x48x56', '80x96x112']),
    ('32x32x32', '4x4x4', 3,
     ['4x4x4', '8x8x8', '16x16x16', '32x32x32'],
     ['4x4x4', '8x8x8', '16x16x16', '32x32x32']),
    ('64x64x16', '4x4x4', 4,
     ['4x4x4', '8x8x8', '16x16x16', '32x32x16', '64x64x16'],
     ['4x4x4', '8x8x4', '16x16x4', '32x32x8', '64x64x16']),
]


def expected_up(sizes: list[str]) -> list[tuple[int, int, int]]:
    """Per-block (x, y, z) factors from consecutive XxYxZ sizes."""
    xyz = [tuple(int(v) for v in s.split('x')) for s in sizes]
    return [(1, 1, 1)] + [tuple(b // a for a, b in zip(prev, cur)) for prev, cur in zip(xyz, xyz[1:])]


@pytest.mark.parametrize('size,base,num_blocks,early,late', WORKED)
@pytest.mark.parametrize('depth_schedule', ['early', 'late'])
def test_worked_shapes(size, base, num_blocks, early, late, depth_schedule):
    sched = make_schedule(parse_size(size), depth_schedule=depth_schedule)
    sizes = early if depth_schedule == 'early' else late
    assert sched.img_shape == parse_size(size)
    assert format_size(sched.base_shape) == base
    assert sched.num_blocks == num_blocks
    assert [format_size(s) for s in sched.block_shapes] == sizes
    assert list(sched.block_up) == expected_up(sizes)
    assert sched.block_shapes[0] == sched.base_shape and sched.block_shapes[-1] == sched.img_shape


def test_prostate_depth_doublings_and_channels():
    sched = make_schedule(parse_size('256x256x24'))
    assert sched.axis_doublings == (3, 6, 6)  # (k_D, k_H, k_W)
    # The channels of the 2D 256 network: 512 up to 64, then 256 and 128.
    assert sched.block_channels == (512, 512, 512, 512, 512, 256, 128)
    small = make_schedule(parse_size('256x256x24'), channel_base=256, channel_max=32)
    assert small.block_channels == (32, 32, 16, 8, 4, 2, 1)


def test_channels_use_largest_inplane_size():
    sched = make_schedule(parse_size('80x96x112'), channel_base=4096, channel_max=1000)
    # r = max(H, W): 6, 12, 24, 48, 96 (the depth 112 is not in-plane).
    assert sched.block_channels == (4096 // 6, 4096 // 12, 4096 // 24, 4096 // 48, 4096 // 96)


def test_base_override_and_depth_schedule():
    sched = make_schedule((24, 256, 256), base=(24, 4, 4))
    assert sched.num_blocks == 6 and sched.axis_doublings == (0, 6, 6)
    assert all(up == (2, 2, 1) for up in sched.block_up[1:])
    sched = make_schedule((24, 256, 256), base=(3, 8, 8), depth_schedule='late')
    assert sched.num_blocks == 5
    assert [up[2] for up in sched.block_up] == [1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match=r'base 5x4x3.*X=256 is not 5 \* 2\^k'):
        make_schedule((24, 256, 256), base=(3, 4, 5))


def test_bad_shapes_name_rule_and_nearest_sizes():
    with pytest.raises(ValueError) as info:
        make_schedule(parse_size('250x256x25'))
    text = str(info.value)
    assert 'S_max / 2^k an integer >= 4' in text and 'S_a / 2^k an' in text and 'at most 7' in text
    assert 'X=250 (nearest valid: 224 or 256)' in text and 'Z=25 (nearest valid: 24 or 28)' in text
    assert 'Y=' not in text  # 256 is fine.
    with pytest.raises(ValueError, match=r'X=3 \(nearest valid: 4\)'):
        make_schedule((3, 3, 3))
    with pytest.raises(ValueError, match='depth_schedule'):
        make_schedule((24, 256, 256), depth_schedule='middle')
    with pytest.raises(ValueError, match='img_shape'):
        make_schedule((24, 256))


def test_describe_and_frozen():
    sched = make_schedule(parse_size('64x64x16'))
    lines = sched.describe().splitlines()
    assert len(lines) == 2 + 5 + 1  # Header, rule, five blocks, the depth note.
    assert lines[0].split() == ['block', 'size', 'XxYxZ', 'up', 'x,y,z', 'channels', 'doubles']
    assert lines[2].split() == ['0', '4x4x4', '1,1,1', '512', '(base)']
    assert lines[-2].split() == ['4', '64x64x16', '2,2,1', '512', 'x', 'y']
    assert lines[-1] == 'z (16) doubles in blocks 1-2 (depth schedule "early"): full size from block 2, at 16x16 in-plane.'
    with pytest.raises(dataclasses.FrozenInstanceError):
        sched.num_blocks = 3


@pytest.mark.parametrize('text,shape', [('256x256x24', (24, 256, 256)), ('80x96x112', (112, 96, 80)),
                                        ('5X6x7', (7, 6, 5)), (' 16 x 16 x 8 ', (8, 16, 16))])
def test_parse_format_round_trip(text, shape):
    assert parse_size(text) == shape
    assert parse_size(format_size(shape)) == shape
    assert format_size(shape) == text.replace(' ', '').lower()


@pytest.mark.parametrize('text', ['256x256', '256x256x0', '256*256*24', 'axbxc', '', '-4x4x4'])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match='expected XxYxZ'):
        parse_size(text)
