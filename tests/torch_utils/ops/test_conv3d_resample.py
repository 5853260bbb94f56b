# SPDX-License-Identifier: Apache-2.0
"""conv3d_resample: every fast path against the defining upfirdn3d -> conv3d -> upfirdn3d chain; gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv3d_resample as R
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


@pytest.mark.parametrize('k, up, down, route, stride', [
    (3, [2, 2, 1], 1, 'conv_transpose3d', [1, 2, 2]),  # Up: transposed conv with stride = up (z, y, x).
    (3, [1, 2, 4], [2, 1, 1], 'conv_transpose3d', [4, 2, 1]),
    (3, 1, [2, 2, 1], 'conv3d', [1, 2, 2]),  # Down: strided conv with stride = down.
    (3, 1, [1, 4, 2], 'conv3d', [2, 4, 1]),
])
def test_resampling_runs_through_strided_convolutions(k, up, down, route, stride, monkeypatch):
    calls = []
    real = getattr(F, route)

    def spy(x, weight, **kwargs):
        if tuple(weight.shape[2:]) == (k, k, k):  # The convolution itself, not upfirdn3d's 1D filter passes.
            calls.append(list(kwargs['stride']))
        return real(x, weight, **kwargs)

    monkeypatch.setattr(F, route, spy)
    x, w = _tensors(k, 1, shape=(1, 4, 8, 8, 8))
    conv3d_resample(x, w, upfirdn3d.setup_filter(FILTER).double(), up=up, down=down, padding=1)
    assert calls == [stride]


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
                                      flip_weight=max(upfirdn3d.parse_xyz(up, 'up')) == 1)
    # fast_mode checks random projections of the Jacobians: the 108 weights make the full check slow on a CPU.
    assert torch.autograd.gradcheck(fn, [x, w], fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, [x, w], fast_mode=True)


#----------------------------------------------------------------------------
# A batch of one on the CPU runs as two halves along D (a batch of 2, which torch computes with oneDNN).

SPLIT_CASES = [  # (depth, kernel, stride, padding) along D; H and W use other values
    (8, 3, 1, 1), (7, 3, 1, 1), (9, 3, 2, 0), (10, 3, 2, 1), (6, 4, 2, 1), (5, 1, 1, 0), (11, 2, 3, 0), (4, 3, 1, 2),
]


@pytest.mark.parametrize('depth, k, stride, pad', SPLIT_CASES)
def test_split_halves_equal_the_convolution(depth, k, stride, pad):
    gen = torch.Generator().manual_seed(depth * 10 + k)
    x = torch.randn([1, 3, depth, 5, 6], dtype=torch.float64, generator=gen)
    w = torch.randn([4, 3, k, 3, 2], dtype=torch.float64, generator=gen)
    strides, pads = [stride, 1, 2], [pad, 1, 0]
    torch.testing.assert_close(R._conv3d_split(x, w, strides, pads, 1), F.conv3d(x, w, stride=strides, padding=pads),
                               rtol=1e-12, atol=1e-12)
    if pad < k:  # conv_transpose3d needs padding below the kernel size.
        wt = torch.randn([3, 4, k, 3, 2], dtype=torch.float64, generator=gen)
        torch.testing.assert_close(R._conv_transpose3d_split(x, wt, strides, pads, 1),
                                   F.conv_transpose3d(x, wt, stride=strides, padding=pads), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('transpose', [False, True])
def test_split_halves_gradcheck_and_gradgradcheck(transpose):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn([1, 2, 5, 3, 3], dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.randn([2, 2, 3, 2, 2], dtype=torch.float64, generator=gen, requires_grad=True)
    split = R._conv_transpose3d_split if transpose else R._conv3d_split
    fn = lambda x, w: split(x, w, [2, 1, 1], [1, 0, 1], 1)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [x, w], fast_mode=True)
    assert torch.autograd.gradgradcheck(fn, [x, w], fast_mode=True)


@pytest.mark.parametrize('up, down', [(1, 1), (2, 1), ([2, 2, 1], 1), (1, 2), (1, [1, 2, 2])])
def test_batch_of_one_float32_runs_as_halves(up, down, monkeypatch):
    calls = []
    for name in ('_conv3d_split', '_conv_transpose3d_split'):
        original = getattr(R, name)
        monkeypatch.setattr(R, name, lambda *args, _f=original, _n=name: calls.append(_n) or _f(*args))
    gen = torch.Generator().manual_seed(4)
    x = torch.randn([1, 4, 8, 6, 7], generator=gen, requires_grad=True)
    w = torch.randn([5, 4, 3, 3, 3], generator=gen, requires_grad=True)
    f = upfirdn3d.setup_filter(FILTER)
    flip = max(upfirdn3d.parse_xyz(up, 'up')) == 1
    y = conv3d_resample(x, w, f, up=up, down=down, padding=1, flip_weight=flip)
    assert calls == ['_conv_transpose3d_split' if up != 1 else '_conv3d_split']
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    expected = conv3d_resample_generic(x64, w64, f.double(), up=up, down=down, padding=1, flip_weight=flip)
    torch.testing.assert_close(y.double(), expected, rtol=1e-5, atol=1e-4)
    dy = torch.randn(y.shape, generator=gen)
    got = torch.autograd.grad(y, [x, w], dy)
    want = torch.autograd.grad(expected, [x64, w64], dy.double())
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-4)
    calls.clear()
    conv3d_resample(torch.randn([2, 4, 8, 6, 7]), w.detach(), f, up=up, down=down, padding=1, flip_weight=flip)
    assert not calls  # a batch of 2 is left to torch


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

#----------------------------------------------------------------------------
# Dtypes and memory formats: forward, backward and an R1-style double backward against a float64 CPU reference
# (the generic chain). On a GPU this runs the upfirdn3d plugin and cuDNN (TF32 off). Tolerances, max error
# relative to max |reference|: float64 1e-10, float32 1e-4, float16 1e-2, bfloat16 4e-2 (inputs are rounded to
# the dtype first, so only the op's own roundings count: one per upfirdn3d pass and per convolution).

TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 4e-2}
FORMATS = {'contiguous': torch.contiguous_format, 'channels_last_3d': torch.channels_last_3d}
DTYPE_CASES = [  # (kernel size, up, down, padding, groups) covering every route, on odd sizes.
    (1, 1, [2, 2, 1], 0, 2),
    (3, [2, 2, 1], 1, 1, 1),
    (3, 1, [2, 2, 1], 1, 2),
    (3, [1, 2, 2], [2, 1, 1], [1, 0, 2], 1),
    (3, 1, 1, 1, 1),
]


def _max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.detach().cpu().double() - b.detach().double()).abs().max() / b.detach().abs().max()).item()


def check_dtype_and_format(device, dtype, memory_format, k, up, down, padding, groups) -> None:
    x64, w64 = _tensors(k, groups, seed=3, shape=(2, 4, 5, 7, 9))
    x = x64.to(device, dtype).to(memory_format=memory_format).requires_grad_()
    w = w64.to(device, dtype).requires_grad_()
    xr, wr = x.detach().cpu().double().requires_grad_(), w.detach().cpu().double().requires_grad_()
    f = upfirdn3d.setup_filter(FILTER)
    kwargs = dict(up=up, down=down, padding=padding, groups=groups)
    y = conv3d_resample(x, w, f.to(device), **kwargs)
    yr = conv3d_resample_generic(xr, wr, f.double(), **kwargs)
    tol = TOLERANCE[dtype]
    assert y.dtype == dtype and y.shape == yr.shape and _max_rel_error(y, yr) < tol

    gen = torch.Generator().manual_seed(4)
    dy = torch.randn(yr.shape, generator=gen, dtype=torch.float64)
    gx, gw = torch.autograd.grad(y, [x, w], dy.to(device, dtype), create_graph=True)
    gxr, gwr = torch.autograd.grad(yr, [xr, wr], dy, create_graph=True)
    assert _max_rel_error(gx, gxr) < tol and _max_rel_error(gw, gwr) < tol

    # R1-style: differentiate a penalty on the input gradient with respect to the weights.
    v = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    (ggw,) = torch.autograd.grad((gx.double() * v.to(device)).sum(), [w])
    (ggwr,) = torch.autograd.grad((gxr * v).sum(), [wr])
    assert ggw.dtype == dtype and _max_rel_error(ggw, ggwr) < tol


@pytest.mark.parametrize('fmt', list(FORMATS))
@pytest.mark.parametrize('case', DTYPE_CASES[:3])
def test_float32_and_channels_last_on_cpu(case, fmt):
    check_dtype_and_format('cpu', torch.float32, FORMATS[fmt], *case)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', list(TOLERANCE), ids=str)
@pytest.mark.parametrize('fmt', list(FORMATS))
@pytest.mark.parametrize('case', DTYPE_CASES)
def test_cuda_matches_ref(case, dtype, fmt, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, 'allow_tf32', False)  # TF32 would round float32 to 10 bits.
    check_dtype_and_format('cuda', dtype, FORMATS[fmt], *case)
