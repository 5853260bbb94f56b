# SPDX-License-Identifier: Apache-2.0
"""conv3d_resample: every fast path against the defining upfirdn3d -> conv3d -> upfirdn3d chain; gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import upfirdn3d
from torch_utils.ops.conv3d_resample import conv3d_resample, conv3d_resample_generic

FILTER = [1, 3, 3, 1]

# (kernel size, up, down, padding, groups): one or more cases per fast path.
CASES = [
    (1, 1, 2, 0, 1),  # 1x1x1 down: filter + decimate, then 1x1x1 conv
    (1, 1, [2, 2, 1], 0, 2),
    (1, 2, 1, 0, 1),  # 1x1x1 up: 1x1x1 conv, then up-sample
    (1, [2, 2, 1], 1, [0, 1, 0], 1),
    (3, 1, 2, 1, 1),  # down: FIR filter, then strided conv
    (3, 1, [2, 2, 1], 1, 2),
    (3, 1, [1, 2, 2], [1, 0, 2], 1),
    (3, 2, 1, 1, 1),  # up: transposed conv, then FIR filter
    (3, [2, 2, 1], 1, 1, 2),
    (3, [1, 2, 2], 1, 0, 1),
    (2, 2, 1, [2, 1, 0], 1),  # even kernel with asymmetric crops handed to the filter
    (3, 2, 2, 1, 1),  # up and down together
    (3, [2, 1, 2], [1, 2, 1], 1, 1),
    (3, 1, 1, 1, 1),  # plain conv3d
    (3, 1, 1, [1, 0, 2], 2),
    (3, 1, 1, -1, 1),  # negative padding: the generic chain itself
]


def _tensors(k: int, groups: int, seed: int = 0, shape=(2, 4, 5, 6, 7)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=gen)
    w = torch.randn([6, shape[1] // groups, k, k, k], dtype=torch.float64, generator=gen)
    return x, w


@pytest.mark.parametrize('k, up, down, padding, groups', CASES)
@pytest.mark.parametrize('flip_weight', [True, False])
def test_fast_paths_equal_generic(k, up, down, padding, groups, flip_weight):
    x, w = _tensors(k, groups)
    f = upfirdn3d.setup_filter(FILTER).double()
    y = conv3d_resample(x, w, f, up=up, down=down, padding=padding, groups=groups, flip_weight=flip_weight)
    expected = conv3d_resample_generic(x, w, f, up=up, down=down, padding=padding, groups=groups,
                                       flip_weight=flip_weight)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)


def test_output_shapes_follow_the_factors():
    x, w = _tensors(3, 1)
    f = upfirdn3d.setup_filter(FILTER).double()
    assert conv3d_resample(x, w, f, up=[2, 2, 1], padding=1).shape == (2, 6, 5, 12, 14)
    assert conv3d_resample(x, w, f, down=[2, 2, 1], padding=1).shape == (2, 6, 5, 3, 3)  # odd 7 -> 3
    assert conv3d_resample(x, w, f, padding=1).shape == (2, 6, 5, 6, 7)


def test_plain_conv_and_true_convolution():
    x, w = _tensors(3, 2)
    torch.testing.assert_close(conv3d_resample(x, w, padding=1, groups=2), F.conv3d(x, w, padding=1, groups=2))
    torch.testing.assert_close(conv3d_resample(x, w, padding=1, groups=2, flip_weight=False),
                               F.conv3d(x, w.flip([2, 3, 4]), padding=1, groups=2))


def test_other_filter_forms():
    x, w = _tensors(3, 1, shape=(1, 4, 4, 5, 6))
    f1 = upfirdn3d.setup_filter(FILTER).double()
    f3 = upfirdn3d.setup_filter(FILTER, separable=False).double()
    for f in [None, f3, [f1, None, upfirdn3d.setup_filter([1, 2, 1]).double()]]:
        for up, down in [([2, 1, 2], 1), (1, [1, 2, 2]), (2, [1, 2, 1])]:
            y = conv3d_resample(x, w, f, up=up, down=down, padding=1, flip_weight=False)
            expected = conv3d_resample_generic(x, w, f, up=up, down=down, padding=1, flip_weight=False)
            torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)


def test_up_with_separable_filter_matches_upsample_then_conv():
    """Up-sampling path against its definition in terms of the public helpers."""
    x, w = _tensors(3, 1, shape=(1, 4, 3, 4, 5))
    f = upfirdn3d.setup_filter(FILTER).double()
    y = conv3d_resample(x, w, f, up=[2, 2, 1], padding=1, flip_weight=False)
    # The padding is applied once, before the filter, so it belongs to upsample3d here, not to the conv.
    expected = F.conv3d(upfirdn3d.upsample3d(x, f, up=[2, 2, 1], padding=1, impl='ref'), w.flip([2, 3, 4]))
    torch.testing.assert_close(y, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize('up, down, groups', [(2, 1, 1), ([1, 2, 2], 1, 1), (1, [2, 1, 2], 1), (1, 1, 2),
                                              ([2, 1, 1], 1, 2)])
def test_gradcheck_and_gradgradcheck(up, down, groups):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([1, 2, 2, 2, 3], dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn([2, 2 // groups, 3, 3, 3], dtype=torch.float64, generator=gen, requires_grad=True)
    f = upfirdn3d.setup_filter(FILTER).double()
    fn = lambda x, w: conv3d_resample(x, w, f, up=up, down=down, padding=1, groups=groups,  # noqa: E731
                                      flip_weight=max(upfirdn3d._parse_xyz(up, 'up')) == 1)
    # fast_mode checks random projections of the Jacobians: the 108 weights make the full check slow on a CPU.
    assert torch.autograd.gradcheck(fn, [x, w], fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, [x, w], fast_mode=True)


@pytest.mark.parametrize('kwargs, match', [
    (dict(w=torch.zeros([6, 4, 3, 3])), 'w must be'),
    (dict(w=torch.zeros([6, 4, 3, 3, 3], dtype=torch.float32)), 'dtype'),
    (dict(groups=2), r'x must be \[N, 8'),
    (dict(w=torch.zeros([5, 2, 3, 3, 3], dtype=torch.float64), groups=2), 'divide'),
    (dict(up=[2, 2]), 'up must be'),
    (dict(padding=[1, 1]), 'padding must be'),
])
def test_bad_input(kwargs, match):
    args = dict(x=torch.zeros([1, 4, 4, 4, 4], dtype=torch.float64),
                w=torch.zeros([6, 4, 3, 3, 3], dtype=torch.float64))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        conv3d_resample(**args)
