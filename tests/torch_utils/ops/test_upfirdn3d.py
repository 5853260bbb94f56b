# SPDX-License-Identifier: Apache-2.0
"""upfirdn3d: reference path against scipy.signal.upfirdn per axis, helpers, gradients, errors; CUDA vs reference."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import upfirdn3d as U

AXIS_DIM = {0: 4, 1: 3, 2: 2}  # x, y, z -> dimension of [N, C, D, H, W]
CUDA = torch.cuda.is_available()


def _taps(size: int, seed: int) -> torch.Tensor:
    """Asymmetric random taps, so a wrong flip cannot go unnoticed."""
    return torch.as_tensor(np.random.RandomState(seed).uniform(0.1, 1.0, size), dtype=torch.float64)


def _scipy_axis(x: np.ndarray, f, dim: int, up: int, down: int, p0: int, p1: int, flip: bool) -> np.ndarray:
    """One upfirdn pass along `dim` built from scipy.signal.upfirdn (zero insertion, full convolution, decimation)."""
    n = x.shape[dim]
    u = scipy.signal.upfirdn([1.0], x, up=up, axis=dim)  # (n - 1) * up + 1 samples
    pad = [(0, 0)] * x.ndim
    pad[dim] = (0, n * up - u.shape[dim])
    u = np.pad(u, pad)  # n * up samples: the trailing zeros belong to the up-sampled signal
    pad[dim] = (max(p0, 0), max(p1, 0))
    u = np.pad(u, pad)
    u = np.take(u, np.arange(-min(p0, 0), u.shape[dim] + min(p1, 0)), axis=dim)
    if f is None:
        valid = u
    else:
        h = np.asarray(f)[::-1] if flip else np.asarray(f)
        full = scipy.signal.upfirdn(h, u, axis=dim)  # true convolution, len(u) + len(h) - 1 samples
        valid = np.take(full, np.arange(len(h) - 1, u.shape[dim]), axis=dim)
    return scipy.signal.upfirdn([1.0], valid, down=down, axis=dim)


def _scipy_upfirdn3d(x: torch.Tensor, filters, up, down, padding, flip=False, gain=1.0) -> torch.Tensor:
    """Separable expectation: a scipy pass along x, then y, then z."""
    y = x.numpy()
    for axis in range(3):
        y = _scipy_axis(y, filters[axis], AXIS_DIM[axis], up[axis], down[axis], padding[2 * axis],
                        padding[2 * axis + 1], flip)
    return torch.as_tensor(y * gain)


def _xyz(v):
    return [v] * 3 if isinstance(v, int) else list(v)


def _pad6(p):
    if isinstance(p, int):
        return [p] * 6
    return [p[0], p[0], p[1], p[1], p[2], p[2]] if len(p) == 3 else list(p)

#----------------------------------------------------------------------------
# Forward against scipy.

SEPARABLE_CASES = [
    # (filter sizes x/y/z or one size, up, down, padding)
    (3, 1, 1, 0),
    (3, 2, 1, [1, 1, 1]),
    (5, 1, 2, 2),
    (4, 4, 1, [2, 1, 3, 0, 1, 2]),
    (4, [2, 2, 1], 1, [2, 1, 2, 1, 0, 0]),
    (3, 1, [2, 2, 1], [1, 1, 0]),
    (5, [1, 2, 4], [2, 1, 1], [2, 2, 1, 3, 2, 2]),
    (4, 2, 2, 1),
    (4, 4, 4, 2),
    (3, 1, 1, [-1, -2, 0, -1, -1, 0]),  # negative padding crops
    ((3, None, 5), [2, 1, 2], [1, 2, 1], [1, 2, 0, 0, 2, 1]),  # per-axis filters with an unfiltered axis
    ((None, None, None), [2, 1, 3], [1, 2, 2], [1, 0, 2, -1, 0, 1]),
]


@pytest.mark.parametrize('fsize, up, down, padding', SEPARABLE_CASES)
@pytest.mark.parametrize('flip_filter, gain', [(False, 1.0), (True, 3.0)])
def test_ref_matches_scipy(fsize, up, down, padding, flip_filter, gain):
    torch.manual_seed(0)
    x = torch.randn([2, 3, 5, 6, 7], dtype=torch.float64)
    if isinstance(fsize, tuple):
        filters = [None if s is None else _taps(s, seed) for seed, s in enumerate(fsize)]
        f = filters
    else:
        f = _taps(fsize, 1)
        filters = [f] * 3
    y = U.upfirdn3d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain, impl='ref')
    expected = _scipy_upfirdn3d(x, filters, _xyz(up), _xyz(down), _pad6(padding), flip_filter, gain)
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('up, down, padding, flip_filter', [(1, 1, 0, False), ([2, 1, 2], [1, 2, 1], [1, 2, 0, 1, 2, 1], True),
                                                            (2, 2, [-1, 1, 1, 0, 0, 1], False)])
def test_ref_full_filter_matches_scipy(up, down, padding, flip_filter):
    torch.manual_seed(1)
    x = torch.randn([1, 2, 4, 5, 6], dtype=torch.float64)
    f3 = torch.as_tensor(np.random.RandomState(2).uniform(0.1, 1, [3, 4, 2]))  # [fz, fy, fx]
    y = U.upfirdn3d(x, f3, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=2.0, impl='ref')
    # Expectation: scipy zero insertion and padding (filter-free passes), then one scipy 3D convolution.
    up, down, pad = _xyz(up), _xyz(down), _pad6(padding)
    u = _scipy_upfirdn3d(x, [None] * 3, up, [1, 1, 1], pad).numpy()
    h = f3.numpy()[::-1, ::-1, ::-1] if flip_filter else f3.numpy()
    full = scipy.signal.convolve(u, h[np.newaxis, np.newaxis], mode='valid')
    expected = torch.as_tensor(2.0 * full[:, :, ::down[2], ::down[1], ::down[0]])
    assert y.shape == expected.shape
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_outer_product_filter_equals_separable():
    torch.manual_seed(2)
    x = torch.randn([2, 2, 5, 6, 7], dtype=torch.float64)
    f1 = _taps(4, 3)
    f1 = f1 / f1.sum()
    f3 = f1[:, None, None] * f1[None, :, None] * f1[None, None, :]  # [fz, fy, fx], float64
    torch.testing.assert_close(U.setup_filter(f1, separable=False), f3.float())
    a = U.upfirdn3d(x, f3, up=2, down=1, padding=[2, 1, 2, 1, 2, 1], gain=8, impl='ref')
    b = U.upfirdn3d(x, f1, up=2, down=1, padding=[2, 1, 2, 1, 2, 1], gain=8, impl='ref')
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_identity_and_gain_without_filter():
    x = torch.randn([1, 2, 3, 4, 5], dtype=torch.float64)
    torch.testing.assert_close(U.upfirdn3d(x, None, impl='ref'), x, rtol=0, atol=0)
    torch.testing.assert_close(U.upfirdn3d(x, None, gain=2.5, impl='ref'), 2.5 * x, rtol=0, atol=0)
    y = U.upfirdn3d(x, None, up=[2, 1, 1], impl='ref')  # zero insertion along x only
    torch.testing.assert_close(y[..., 0::2], x, rtol=0, atol=0)
    assert y[..., 1::2].abs().max() == 0

#----------------------------------------------------------------------------
# setup_filter and the helpers.


def test_setup_filter_rules():
    f = U.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4,)
    torch.testing.assert_close(f, torch.tensor([1, 3, 3, 1]) / 8.0)
    assert U.setup_filter([1, 3, 3, 1], gain=8).sum().item() == pytest.approx(2.0)  # gain^(1/3) per 1D filter
    f3 = U.setup_filter([1, 3, 3, 1], gain=8, separable=False)
    assert f3.shape == (4, 4, 4) and f3.sum().item() == pytest.approx(8.0)
    torch.testing.assert_close(f3[1, 2, 0] / f3.sum(), torch.tensor(3 * 3 * 1 / 512.0))
    torch.testing.assert_close(U.setup_filter([1, 2], flip_filter=True), torch.tensor([2.0, 1.0]) / 3)
    axes = U.setup_filter([[1, 1], None, [1, 2, 1]], gain=4)
    assert axes[1] is None and axes[0].sum().item() == pytest.approx(2.0) and axes[2].sum().item() == pytest.approx(2)
    torch.testing.assert_close(U.setup_filter(None), torch.ones([1]))
    with pytest.raises(ValueError, match='separable'):
        U.setup_filter(torch.ones([2, 2, 2]), separable=True)


def test_filter3d_keeps_shape_and_matches_upfirdn():
    torch.manual_seed(3)
    x = torch.randn([1, 2, 5, 6, 7], dtype=torch.float64)
    f = _taps(4, 4)
    y = U.filter3d(x, f, impl='ref')
    assert y.shape == x.shape
    torch.testing.assert_close(y, U.upfirdn3d(x, f, padding=[2, 1, 2, 1, 2, 1], impl='ref'))
    y = U.filter3d(x, [f, None, None], padding=[1, 0, 0], impl='ref')
    assert y.shape == (1, 2, 5, 6, 9)


def test_upsample_downsample_only_filter_resampled_axes():
    torch.manual_seed(4)
    x = torch.randn([1, 2, 3, 4, 5], dtype=torch.float64)
    f = U.setup_filter([1, 3, 3, 1]).double()
    y = U.upsample3d(x, f, up=[2, 2, 1], impl='ref')
    assert y.shape == (1, 2, 3, 8, 10)
    expected = U.upfirdn3d(x, [f, f, None], up=[2, 2, 1], padding=[2, 1, 2, 1, 0, 0], gain=4, impl='ref')
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    z = U.downsample3d(y, f, down=[2, 2, 1], impl='ref')
    assert z.shape == x.shape
    expected = U.upfirdn3d(y, [f, f, None], down=[2, 2, 1], padding=[1, 1, 1, 1, 0, 0], impl='ref')
    torch.testing.assert_close(z, expected, rtol=0, atol=0)


@pytest.mark.parametrize('taps, factor', [
    ([1, 3, 3, 1], 2), ([1, 3, 3, 1], [2, 2, 1]), ([1, 2, 1], [1, 2, 2]), ([1, 4, 6, 4, 1], [2, 2, 1]),
    ([1, 2, 3, 4, 3, 2, 1], [1, 4, 2]),  # every polyphase component of the triangle sums to 1/4 (and 1/2)
])
def test_constant_volume_stays_constant(taps, factor):
    f = U.setup_filter(taps)
    ones = torch.full([1, 1, 8, 8, 8], 0.75)
    y = U.upsample3d(ones, f, up=factor, impl='ref')
    assert y.shape[2:] == tuple(s * u for s, u in zip(ones.shape[2:], reversed(_xyz(factor))))
    torch.testing.assert_close(y[:, :, 3:-3, 3:-3, 3:-3], torch.full_like(y[:, :, 3:-3, 3:-3, 3:-3], 0.75))
    ones = torch.full([1, 1, 16, 16, 16], 0.75)
    z = U.downsample3d(ones, f, down=factor, impl='ref')
    assert z.shape[2:] == tuple(s // d for s, d in zip(ones.shape[2:], reversed(_xyz(factor))))
    torch.testing.assert_close(z[:, :, 2:-2, 2:-2, 2:-2], torch.full_like(z[:, :, 2:-2, 2:-2, 2:-2], 0.75))


def test_ref_keeps_dtype_and_channels_last():
    x = torch.randn([1, 3, 4, 5, 6]).to(memory_format=torch.channels_last_3d)
    y = U.upsample3d(x, U.setup_filter([1, 3, 3, 1]), impl='ref')
    assert y.dtype == torch.float32 and y.shape == (1, 3, 8, 10, 12)

#----------------------------------------------------------------------------
# Gradients (float64, small shapes).

GRAD_CASES = [
    dict(f=3, up=1, down=1, padding=1),
    dict(f=4, up=[2, 1, 2], down=[1, 2, 1], padding=[2, 1, 0, 1, 1, 2], flip_filter=True, gain=2.0),
    dict(f=(3, None, 4), up=2, down=[1, 1, 2], padding=[1, -1, 2, 0, 1, 1]),
    dict(f='3d', up=[1, 2, 1], down=[2, 1, 1], padding=[1, 0, 1, 2, 0, 1]),
]


def _grad_filter(spec):
    if spec == '3d':
        return torch.as_tensor(np.random.RandomState(5).uniform(0.1, 1, [2, 3, 2]))
    if isinstance(spec, tuple):
        return [None if s is None else _taps(s, 6 + i) for i, s in enumerate(spec)]
    return _taps(spec, 6)


@pytest.mark.parametrize('case', GRAD_CASES)
def test_ref_gradcheck_and_gradgradcheck(case):
    case = dict(case)
    f = _grad_filter(case.pop('f'))
    x = torch.randn([1, 1, 3, 3, 4], dtype=torch.float64, requires_grad=True)
    fn = lambda x: U.upfirdn3d(x, f, impl='ref', **case)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])


@pytest.mark.parametrize('helper', ['filter3d', 'upsample3d', 'downsample3d'])
def test_helpers_gradcheck_and_gradgradcheck(helper):
    f = U.setup_filter([1, 3, 3, 1]).double()
    x = torch.randn([1, 1, 2, 4, 4], dtype=torch.float64, requires_grad=True)
    kwargs = {'filter3d': {}, 'upsample3d': dict(up=[2, 2, 1]), 'downsample3d': dict(down=[2, 1, 2])}[helper]
    fn = lambda x: getattr(U, helper)(x, f, impl='ref', **kwargs)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])


def test_backward_formula_is_the_adjoint():
    """The padding rule the CUDA backward uses, checked on the reference path: <A x, y> == <x, A^T y>."""
    torch.manual_seed(7)
    f = [_taps(4, 8), _taps(3, 9), None]
    up, down, pad, flip = (2, 1, 3), (1, 2, 2), (2, 1, -1, 2, 1, 0), False
    x = torch.randn([1, 2, 3, 5, 4], dtype=torch.float64)
    y = U.upfirdn3d(x, f, up=up, down=down, padding=pad, flip_filter=flip, impl='ref')
    dy = torch.randn_like(y)
    sizes = U._filter_sizes(f)
    bpad = []
    for axis in range(3):
        n_in, n_out = x.shape[AXIS_DIM[axis]], y.shape[AXIS_DIM[axis]]
        bpad += [sizes[axis] - pad[2 * axis] - 1, n_in * up[axis] - n_out * down[axis] + pad[2 * axis] - up[axis] + 1]
    dx = U.upfirdn3d(dy, f, up=down, down=up, padding=bpad, flip_filter=not flip, impl='ref')
    assert dx.shape == x.shape
    torch.testing.assert_close((y * dy).sum(), (x * dx).sum(), rtol=1e-12, atol=1e-12)

#----------------------------------------------------------------------------
# Bad input.


@pytest.mark.parametrize('kwargs, match', [
    (dict(x=torch.zeros([2, 3, 4, 5])), r'\[N, C, D, H, W\]'),
    (dict(x=torch.zeros([1, 1, 4, 4, 4], dtype=torch.int64)), 'floating-point'),
    (dict(up=0), 'up must be'),
    (dict(down=[2, 2]), 'down must be'),
    (dict(padding=[1, 2, 3, 4]), 'padding must be'),
    (dict(f=torch.ones([3, 3])), 'f must be'),
    (dict(f=[torch.ones([3, 3]), None, None]), 'per-axis'),
    (dict(f=torch.ones([9]), padding=0), 'output size along x'),
    (dict(padding=[0, 0, 0, 0, -3, -2]), 'output size along z'),
    (dict(impl='fast'), 'impl'),
])
def test_bad_input(kwargs, match):
    args = dict(x=torch.zeros([1, 1, 4, 4, 4]), f=torch.ones([3]), padding=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        U.upfirdn3d(**args)

#----------------------------------------------------------------------------
# The CUDA path's autograd wiring, on the CPU: a stand-in plugin with the kernels' contract (correlation-order
# taps in the accumulation dtype, per-pass gain) computes each pass with the reference, so the Function's
# forward pass split, backward padding and flip toggling, and double backward are checked without a GPU.


class _StandInPlugin:
    def __init__(self):
        self.calls = []

    @staticmethod
    def _check(x, f, ndim):
        assert f.dtype == (torch.float64 if x.dtype == torch.float64 else torch.float32)
        assert f.ndim == ndim and f.is_contiguous() and f.device == x.device

    def upfirdn3d_axis(self, x, f, dim, up, down, pad0, pad1, gain):
        self._check(x, f, 1)
        self.calls.append(('axis', dim))
        axis = {4: 0, 3: 1, 2: 2}[dim]
        return U._ref_pass_1d(x, axis, f, up, down, pad0, pad1, True, gain)

    def upfirdn3d_full(self, x, f, *args):
        self._check(x, f, 3)
        self.calls.append(('full',))
        up, down, padding, gain = args[0:3], args[3:6], args[6:12], args[12]
        return U._upfirdn3d_ref(x, f, up, down, padding, True, gain)


@pytest.mark.parametrize('case', GRAD_CASES + [dict(f=None, up=[2, 1, 1], down=[1, 1, 2], padding=[0, 1, 0, 0, 1, 0])])
def test_cuda_function_wiring_with_stand_in_plugin(case, monkeypatch):
    plugin = _StandInPlugin()
    monkeypatch.setattr(U, '_plugin', plugin)
    case = dict(case)
    f = None if case['f'] is None else _grad_filter(case.pop('f'))
    case.pop('f', None)
    args = (U._parse_xyz(case.get('up', 1), 'up'), U._parse_xyz(case.get('down', 1), 'down'),
            U._parse_padding(case.get('padding', 0)), case.get('flip_filter', False), case.get('gain', 1.0))
    x = torch.randn([1, 1, 3, 3, 4], dtype=torch.float64, requires_grad=True)
    fn_cuda = lambda x: U._upfirdn3d_cuda_apply(x, U._check_filter(f), *args)  # noqa: E731
    fn_ref = lambda x: U._upfirdn3d_ref(x, U._check_filter(f), *args)  # noqa: E731
    torch.testing.assert_close(fn_cuda(x), fn_ref(x), rtol=1e-12, atol=1e-12)
    assert plugin.calls and all(c[0] == ('full' if isinstance(f, torch.Tensor) and f.ndim == 3 else 'axis')
                                for c in plugin.calls)
    dy = torch.randn_like(fn_ref(x), requires_grad=True)
    (dx,) = torch.autograd.grad(fn_cuda(x), x, dy, create_graph=True)
    (dx_ref,) = torch.autograd.grad(fn_ref(x), x, dy, create_graph=True)
    torch.testing.assert_close(dx, dx_ref, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(fn_cuda, [x])
    assert torch.autograd.gradgradcheck(fn_cuda, [x])

#----------------------------------------------------------------------------
# CUDA against the reference.

CUDA_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}
CUDA_CASES = [
    dict(f=[1, 3, 3, 1], up=[2, 2, 1], padding=[2, 1, 2, 1, 0, 0], gain=4.0),
    dict(f=[1, 3, 3, 1], down=[2, 2, 1], padding=[1, 1, 1, 1, 0, 0]),
    dict(f=5, up=[1, 2, 4], down=[2, 1, 1], padding=[2, 2, 1, 3, 2, 2], flip_filter=True),
    dict(f=(3, None, 4), up=[2, 1, 1], down=[1, 3, 2], padding=[1, -1, 2, 0, 1, 1]),
    dict(f='3d', up=[1, 2, 2], down=[2, 1, 1], padding=[1, 0, 1, 2, 0, 1], flip_filter=True, gain=2.0),
    dict(f=None, up=[2, 1, 1], down=[1, 1, 2], padding=[0, 1, 0, 0, 1, 0]),
]


def _cuda_filter(spec):
    if spec is None or isinstance(spec, list):
        return None if spec is None else U.setup_filter(spec)
    f = _grad_filter(spec)
    return [None if v is None else v.float() for v in f] if isinstance(f, list) else f.float()


def _max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize('channels_last', [False, True])
@pytest.mark.parametrize('case', CUDA_CASES)
def test_cuda_matches_ref(case, dtype, channels_last):
    case = dict(case)
    f = _cuda_filter(case.pop('f'))
    f_ref = None if f is None else (f.double() if isinstance(f, torch.Tensor) else
                                    [None if v is None else v.double() for v in f])
    torch.manual_seed(8)
    memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
    # Odd sizes that fill no tile; the reference runs in float64 on the same (rounded) input.
    x = torch.randn([2, 3, 5, 7, 9], device='cuda').to(dtype).to(memory_format=memory_format).requires_grad_(True)
    x_ref = x.detach().double().requires_grad_(True)
    y = U.upfirdn3d(x, f, impl='cuda', **case)
    y_ref = U.upfirdn3d(x_ref, f_ref, impl='ref', **case)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert y.is_contiguous(memory_format=memory_format) or min(y.shape[2:]) == 1
    tol = CUDA_TOLERANCE[dtype]
    assert _max_rel_error(y, y_ref) < tol

    # First derivative, built with create_graph so the second can follow.
    dy = torch.randn_like(y_ref)
    (dx,) = torch.autograd.grad(y, x, dy.to(dtype), create_graph=True)
    (dx_ref,) = torch.autograd.grad(y_ref, x_ref, dy, create_graph=True)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert _max_rel_error(dx, dx_ref) < tol

    # Second derivative: d/d(dy) of <dx, v> is upfirdn3d(v), through the backward's own Function.
    dy_c = dy.to(dtype).requires_grad_(True)
    dy_r = dy.clone().requires_grad_(True)
    (dx,) = torch.autograd.grad(y, x, dy_c, create_graph=True)
    (dx_ref,) = torch.autograd.grad(y_ref, x_ref, dy_r, create_graph=True)
    v = torch.randn_like(dx_ref)
    (ddy,) = torch.autograd.grad((dx.double() * v).sum(), dy_c)
    (ddy_ref,) = torch.autograd.grad((dx_ref * v).sum(), dy_r)
    assert _max_rel_error(ddy, ddy_ref) < tol


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
def test_cuda_gradcheck_and_gradgradcheck():
    f = [_taps(4, 10).cuda(), None, _taps(3, 11).cuda()]
    x = torch.randn([1, 2, 3, 4, 5], dtype=torch.float64, device='cuda', requires_grad=True)
    fn = lambda x: U.upfirdn3d(x, f, up=[2, 1, 1], down=[1, 2, 1], padding=[2, 1, 1, 0, 1, 1], impl='cuda')  # noqa
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])
    f3 = torch.as_tensor(np.random.RandomState(12).uniform(0.1, 1, [2, 3, 2]), device='cuda')
    fn = lambda x: U.upfirdn3d(x, f3, up=[1, 2, 1], down=[2, 1, 1], padding=1, impl='cuda')  # noqa
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])


@pytest.mark.skipif(not CUDA, reason='needs CUDA')
def test_cuda_noncontiguous_and_large_input():
    f = U.setup_filter([1, 3, 3, 1])
    x = torch.randn([2, 4, 6, 10, 12], device='cuda')[:, ::2, :, 1:, ::2]  # arbitrary strides
    y = U.upsample3d(x, f, up=[2, 2, 1], impl='cuda')
    torch.testing.assert_close(y, U.upsample3d(x, f, up=[2, 2, 1], impl='ref'), rtol=1e-5, atol=1e-5)
    x = torch.randn([1, 2, 24, 64, 64], device='cuda', dtype=torch.float16)
    y = U.downsample3d(x, f, down=[2, 2, 1], impl='cuda')
    y_ref = U.downsample3d(x.double(), f.double(), down=[2, 2, 1], impl='ref')
    assert _max_rel_error(y, y_ref) < 1e-2
