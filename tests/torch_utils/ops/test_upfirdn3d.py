# SPDX-License-Identifier: Apache-2.0
"""upfirdn3d: reference path against scipy.signal.upfirdn per axis, helpers, gradients, errors; the plugin path
(a host-loop build of the kernels' per-element code on every machine, the real CUDA plugin on a GPU) against the
reference for every dtype and memory format; the CUDA sources compile with nvcc; a failed build raises."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import scipy.signal
import torch
import torch.utils.cpp_extension

from tests.helpers import nvcc_build
from torch_utils import custom_ops
from torch_utils.ops import upfirdn3d as U

AXIS_DIM = {0: 4, 1: 3, 2: 2}  # x, y, z -> dimension of [N, C, D, H, W]
CUDA = torch.cuda.is_available()
OPS_DIR = os.path.dirname(U.__file__)


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


@pytest.mark.parametrize('up, down, padding, flip_filter', [
    (1, 1, 0, False), ([2, 1, 2], [1, 2, 1], [1, 2, 0, 1, 2, 1], True), (2, 2, [-1, 1, 1, 0, 0, 1], False)])
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


@pytest.mark.parametrize('fsize', [3, (3, None, 5), (None, 4, None)])
@pytest.mark.parametrize('gain', [-2.0, -0.5])
def test_negative_gain_matches_scipy(fsize, gain):
    torch.manual_seed(9)
    x = torch.randn([1, 2, 4, 5, 6], dtype=torch.float64)
    filters = [None if s is None else _taps(s, 7) for s in fsize] if isinstance(fsize, tuple) else [_taps(fsize, 7)] * 3
    f = filters if isinstance(fsize, tuple) else filters[0]
    y = U.upfirdn3d(x, f, up=[2, 1, 1], down=[1, 1, 2], padding=1, gain=gain, impl='ref')
    expected = _scipy_upfirdn3d(x, filters, [2, 1, 1], [1, 1, 2], [1] * 6, gain=gain)
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
    # Negative gains stay real: the passes' DC gains still multiply to the requested gain.
    assert U.setup_filter([1, 3, 3, 1], gain=-8).sum().item() == pytest.approx(-2.0)
    assert U.setup_filter([1, 3, 3, 1], gain=-8, separable=False).sum().item() == pytest.approx(-8.0)
    axes = U.setup_filter([[1, 1], None, [1, 2, 1]], gain=-4)
    assert axes[0].sum().item() * axes[2].sum().item() == pytest.approx(-4.0)
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
    dict(f=(None, 2, 3), up=[1, 1, 2], down=[2, 1, 1], padding=[0, 0, 1, 0, 2, 1], gain=-1.5),  # sign on one pass
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


def _saved_tensors(fn, *inputs) -> list[torch.Tensor]:
    """The tensors autograd keeps for the backward of fn(*inputs)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        fn(*inputs)
    return saved


@pytest.mark.parametrize('case', GRAD_CASES)
def test_ref_keeps_no_activation_for_backward(case):
    """The reference path saves the filters only (its backward is the adjoint op), never x or a pass result."""
    case = dict(case)
    f = _grad_filter(case.pop('f'))
    x = torch.randn([2, 3, 6, 7, 8], dtype=torch.float64, requires_grad=True)
    saved = _saved_tensors(lambda x: U.upfirdn3d(x, f, impl='ref', **case), x)
    filters = [v for v in (f if isinstance(f, list) else [f]) if v is not None]
    assert saved and all(any(t is v for v in filters) for t in saved)


@pytest.mark.slow
def test_ref_learned_filter_gets_gradients():
    """A filter that requires grad goes through plain autograd, so it gets a gradient too."""
    x = torch.randn([1, 2, 3, 4, 5], dtype=torch.float64, requires_grad=True)
    f = _taps(3, 11).requires_grad_()
    fn = lambda x, f: U.upfirdn3d(x, [f, None, f], up=[2, 1, 1], down=[1, 1, 2], padding=1, impl='ref')  # noqa: E731
    assert torch.autograd.gradcheck(fn, [x, f])
    assert torch.autograd.gradgradcheck(fn, [x, f])


def test_ref_third_derivative():
    """The backward is the same Function again, so derivatives of any order exist (here the third)."""
    x = torch.randn([1, 1, 3, 4, 4], dtype=torch.float64, requires_grad=True)
    f = U.setup_filter([1, 3, 3, 1]).double()
    fn = lambda x: U.upsample3d(x, f, up=[2, 2, 1], impl='ref').square()  # noqa: E731
    assert torch.autograd.gradgradcheck(lambda x: torch.autograd.grad(fn(x).sum(), [x], create_graph=True)[0], [x])


def test_backward_formula_is_the_adjoint():
    """The padding rule the CUDA backward uses, checked on the reference path: <A x, y> == <x, A^T y>."""
    torch.manual_seed(7)
    f = [_taps(4, 8), _taps(3, 9), None]
    up, down, pad, flip = (2, 1, 3), (1, 2, 2), (2, 1, -1, 2, 1, 0), False
    x = torch.randn([1, 2, 3, 5, 4], dtype=torch.float64)
    y = U.upfirdn3d(x, f, up=up, down=down, padding=pad, flip_filter=flip, impl='ref')
    dy = torch.randn_like(y)
    sizes = U.filter_sizes(f)
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
    args = (U.parse_xyz(case.get('up', 1), 'up'), U.parse_xyz(case.get('down', 1), 'down'),
            U.parse_padding(case.get('padding', 0)), case.get('flip_filter', False), case.get('gain', 1.0))
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
# The plugin path against the reference, shared by the host-loop build (every machine with a C++ compiler)
# and the real plugin on a GPU. Tolerances: max error relative to max |reference|, against a float64 reference
# on the same rounded input: float64 1e-10, float32 1e-5 (float accumulation), float16 1e-2 and bfloat16 3e-2
# (the output is rounded to the storage type once per separable pass).

PLUGIN_TOLERANCE = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}
FORMATS = {'contiguous': torch.contiguous_format, 'channels_last_3d': torch.channels_last_3d}
ODD_SHAPE = [2, 3, 5, 7, 9]  # Sizes that fill no block, warp or tile evenly.
PLUGIN_CASES = [
    dict(f=[1, 3, 3, 1], up=[2, 2, 1], padding=[2, 1, 2, 1, 0, 0], gain=4.0),
    dict(f=[1, 3, 3, 1], down=[2, 2, 1], padding=[1, 1, 1, 1, 0, 0]),
    dict(f=5, up=[1, 2, 4], down=[2, 1, 1], padding=[2, 2, 1, 3, 2, 2], flip_filter=True),
    dict(f=(3, None, 4), up=[2, 1, 1], down=[1, 3, 2], padding=[1, -1, 2, 0, 1, 1]),
    dict(f='3d', up=[1, 2, 2], down=[2, 1, 1], padding=[1, 0, 1, 2, 0, 1], flip_filter=True, gain=2.0),
    dict(f=None, up=[2, 1, 1], down=[1, 1, 2], padding=[0, 1, 0, 0, 1, 0]),
    dict(f=(None, 2, 3), up=[1, 4, 1], down=[4, 1, 2], padding=[-2, 3, 0, 1, -1, 0], gain=-1.5),  # crops, sign
]


def _plugin_filter(spec):
    if spec is None or isinstance(spec, list):
        return None if spec is None else U.setup_filter(spec)
    f = _grad_filter(spec)
    return [None if v is None else v.float() for v in f] if isinstance(f, list) else f.float()


def _max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30)).item()


def _plugin_path(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1.0):
    """The CUDA path's autograd.Function, on whatever device the loaded plugin runs."""
    return U._upfirdn3d_cuda_apply(x, U._check_filter(f), U.parse_xyz(up, 'up'), U.parse_xyz(down, 'down'),
                                   U.parse_padding(padding), bool(flip_filter), float(gain))


def compare_with_ref(fn, case, dtype, memory_format, device) -> None:
    """Forward, backward and double backward of fn(x, f, **case) in `dtype` against the float64 reference."""
    case = dict(case)
    f = _plugin_filter(case.pop('f'))
    f_ref = None if f is None else (f.double() if isinstance(f, torch.Tensor) else
                                    [None if v is None else v.double() for v in f])
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(ODD_SHAPE, generator=gen).to(device, dtype).to(memory_format=memory_format).requires_grad_(True)
    x_ref = x.detach().double().requires_grad_(True)
    y = fn(x, f, **case)
    y_ref = U.upfirdn3d(x_ref, f_ref, impl='ref', **case)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert y.is_contiguous(memory_format=memory_format) or min(y.shape[2:]) == 1
    tol = PLUGIN_TOLERANCE[dtype]
    assert _max_rel_error(y, y_ref) < tol

    # First derivative, built with create_graph so the second can follow.
    dy = torch.randn(y_ref.shape, generator=gen, dtype=torch.float64).to(device)
    (dx,) = torch.autograd.grad(y, x, dy.to(dtype), create_graph=True)
    (dx_ref,) = torch.autograd.grad(y_ref, x_ref, dy, create_graph=True)
    assert dx.dtype == dtype and dx.shape == x.shape
    assert _max_rel_error(dx, dx_ref) < tol

    # Second derivative: d/d(dy) of <dx, v> is upfirdn3d(v), through the backward's own Function.
    dy_c = dy.to(dtype).requires_grad_(True)
    dy_r = dy.clone().requires_grad_(True)
    (dx,) = torch.autograd.grad(y, x, dy_c, create_graph=True)
    (dx_ref,) = torch.autograd.grad(y_ref, x_ref, dy_r, create_graph=True)
    v = torch.randn(dx_ref.shape, generator=gen, dtype=torch.float64).to(device)
    (ddy,) = torch.autograd.grad((dx.double() * v).sum(), dy_c)
    (ddy_ref,) = torch.autograd.grad((dx_ref * v).sum(), dy_r)
    assert _max_rel_error(ddy, ddy_ref) < tol


def check_gradcheck(fn, device) -> None:
    """gradcheck and gradgradcheck in float64 for separable and full filters, channels_last_3d input."""
    f = [_taps(4, 10).to(device), None, _taps(3, 11).to(device)]
    x = torch.randn([1, 2, 3, 4, 5], dtype=torch.float64, device=device)
    x = x.to(memory_format=torch.channels_last_3d).requires_grad_(True)
    g = lambda x: fn(x, f, up=[2, 1, 1], down=[1, 2, 1], padding=[2, 1, 1, 0, 1, 1])  # noqa: E731
    assert torch.autograd.gradcheck(g, [x])
    assert torch.autograd.gradgradcheck(g, [x])
    f3 = torch.as_tensor(np.random.RandomState(12).uniform(0.1, 1, [2, 3, 2]), device=device)
    g = lambda x: fn(x, f3, up=[1, 2, 1], down=[2, 1, 1], padding=1)  # noqa: E731
    assert torch.autograd.gradcheck(g, [x])
    assert torch.autograd.gradgradcheck(g, [x])


def check_odd_layouts(fn, device) -> None:
    """A strided slice, a permutation that is neither contiguous nor channels_last, and an expanded view."""
    gen = torch.Generator().manual_seed(13)
    base = torch.randn([2, 4, 6, 10, 12], generator=gen, dtype=torch.float64).to(device)
    views = [base[:, ::2, :, 1:, ::2], base.permute(0, 1, 3, 2, 4).contiguous().permute(0, 1, 3, 2, 4),
             base[:1, :1, :1].expand(2, 3, 4, 10, 12)]
    f3 = torch.as_tensor(np.random.RandomState(14).uniform(0.1, 1, [2, 3, 3]), device=device)
    for x in views:
        for f, kwargs in [(U.setup_filter([1, 3, 3, 1]), dict(up=[2, 2, 1], padding=[2, 1, 2, 1, 0, 0])),
                          (f3, dict(down=[1, 2, 2], padding=[1, 1, 0, 2, 1, 0]))]:
            y = fn(x, f, **kwargs)
            y_ref = U.upfirdn3d(x, f.double(), impl='ref', **kwargs)
            torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)

#----------------------------------------------------------------------------
# Host-loop build: the kernels' per-element code in a CPU loop behind the real binding (upfirdn3d.cpp).

HOST_LOOP = r"""
// SPDX-License-Identifier: Apache-2.0
// Test launcher: runs the CUDA kernels' per-element code (upfirdn3d.h) in a plain host loop, with 64-bit
// indices when the binding asks for them or when UPFIRDN3D_HOST_INT64 is set (so both widths get exercised).
#include <cstdlib>

#include <ATen/Dispatch.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "upfirdn3d.h"

template <typename scalar_t, typename index_t>
static void run_all(const Upfirdn3dParams& p, bool full)
{
    for (index_t i = 0; i < static_cast<index_t>(p.total); ++i) {
        if (full)
            upfirdn3d_full_element<scalar_t, index_t>(p, i);
        else
            upfirdn3d_axis_element<scalar_t, index_t>(p, i);
    }
}

void upfirdn3d_launch(const Upfirdn3dParams& p, c10::ScalarType dtype, bool full, bool use_int64)
{
    if (p.total == 0)
        return;
    const bool wide = use_int64 || std::getenv("UPFIRDN3D_HOST_INT64") != nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "upfirdn3d_host", [&] {
        if (wide)
            run_all<scalar_t, int64_t>(p, full);
        else
            run_all<scalar_t, int32_t>(p, full);
    });
}
"""


@pytest.fixture(scope='module')
def host_plugin(tmp_path_factory):
    if shutil.which('c++') is None:
        pytest.skip('needs a C++ compiler')
    src_dir = tmp_path_factory.mktemp('upfirdn3d_host')
    host_loop = src_dir / 'upfirdn3d_host_loop.cpp'
    host_loop.write_text(HOST_LOOP)
    sources = [str(host_loop), os.path.join(OPS_DIR, 'upfirdn3d.cpp')]
    return custom_ops.get_plugin('upfirdn3d_host_plugin', sources=sources,
                                 headers=[os.path.join(OPS_DIR, 'upfirdn3d.h')],
                                 extra_cflags=['-DUPFIRDN3D_HOST_LOOP', f'-I{OPS_DIR}', '-O1'])


@pytest.fixture
def on_host(host_plugin, monkeypatch):
    monkeypatch.setattr(U, '_plugin', host_plugin)
    return _plugin_path


@pytest.mark.slow
@pytest.mark.parametrize('dtype', list(PLUGIN_TOLERANCE), ids=str)
@pytest.mark.parametrize('case', PLUGIN_CASES)
def test_host_loop_matches_ref(on_host, case, dtype):
    for memory_format in FORMATS.values():
        compare_with_ref(on_host, case, dtype, memory_format, 'cpu')


@pytest.mark.slow
def test_host_loop_64bit_indices(on_host, monkeypatch):
    monkeypatch.setenv('UPFIRDN3D_HOST_INT64', '1')
    for case in PLUGIN_CASES:
        compare_with_ref(on_host, case, torch.float64, torch.channels_last_3d, 'cpu')


@pytest.mark.slow
def test_host_loop_gradcheck(on_host):
    check_gradcheck(on_host, 'cpu')


@pytest.mark.slow
def test_host_loop_odd_layouts(on_host):
    check_odd_layouts(on_host, 'cpu')


@pytest.mark.slow
def test_binding_checks(host_plugin):
    x = torch.randn([1, 2, 3, 4, 5])
    f = torch.ones([3])
    with pytest.raises(RuntimeError, match='f must be Double for Double data'):
        host_plugin.upfirdn3d_axis(x.double(), f, 4, 1, 1, 1, 1, 1.0)
    with pytest.raises(RuntimeError, match='contiguous'):
        host_plugin.upfirdn3d_axis(x, torch.ones([6])[::2], 4, 1, 1, 1, 1, 1.0)
    with pytest.raises(RuntimeError, match='non-empty 3D'):
        host_plugin.upfirdn3d_full(x, f, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1.0)
    with pytest.raises(RuntimeError, match='dim must be 2, 3 or 4'):
        host_plugin.upfirdn3d_axis(x, f, 1, 1, 1, 1, 1, 1.0)
    with pytest.raises(RuntimeError, match=r'\[N, C, D, H, W\]'):
        host_plugin.upfirdn3d_axis(x[0], f, 3, 1, 1, 1, 1, 1.0)
    with pytest.raises(RuntimeError, match='would be <= 0'):
        host_plugin.upfirdn3d_axis(x, f, 4, 1, 1, -2, -2, 1.0)
    with pytest.raises(RuntimeError, match='float16, bfloat16, float32 or float64'):
        host_plugin.upfirdn3d_axis(x.to(torch.int32), f, 4, 1, 1, 1, 1, 1.0)

#----------------------------------------------------------------------------
# The CUDA sources compile with nvcc (also without a GPU, e.g. with a CPU-only torch).


@pytest.mark.slow
@pytest.mark.skipif(nvcc_build.find_nvcc() is None, reason='needs nvcc')
def test_cuda_sources_compile(tmp_path):
    symbols = nvcc_build.compile_symbols(os.path.join(OPS_DIR, 'upfirdn3d.cu'), tmp_path)
    assert 'upfirdn3d_launch(Upfirdn3dParams const&, c10::ScalarType, bool, bool)' in symbols
    for dtype in ('float', 'double', 'c10::Half', 'c10::BFloat16'):
        for index in ('int', 'long'):
            for full in ('true', 'false'):
                assert f'upfirdn3d_kernel<{dtype}, {index}, {full}>(Upfirdn3dParams)' in symbols


def test_failed_plugin_build_raises(monkeypatch):
    def broken_build(*args, **kwargs):
        raise RuntimeError('Could not build PyTorch plugin "upfirdn3d_plugin": nvcc: error')

    monkeypatch.setattr(U, '_plugin', None)
    monkeypatch.setattr(custom_ops, 'get_plugin', broken_build)
    with pytest.raises(RuntimeError, match='nvcc: error'):
        U._init()

#----------------------------------------------------------------------------
# The real plugin on a GPU.

requires_cuda = pytest.mark.skipif(not CUDA, reason='needs CUDA')


def _cuda_op(x, f, **kwargs):
    return U.upfirdn3d(x, f, impl='cuda', **kwargs)


@requires_cuda
@pytest.mark.parametrize('dtype', list(PLUGIN_TOLERANCE), ids=str)
@pytest.mark.parametrize('fmt', list(FORMATS))
@pytest.mark.parametrize('case', PLUGIN_CASES)
def test_cuda_matches_ref(case, dtype, fmt):
    compare_with_ref(_cuda_op, case, dtype, FORMATS[fmt], 'cuda')
    assert U._plugin is not None and U._plugin.__name__ == 'upfirdn3d_plugin'


@requires_cuda
def test_cuda_gradcheck_and_gradgradcheck():
    check_gradcheck(_cuda_op, 'cuda')


@requires_cuda
def test_cuda_odd_layouts_and_large_input():
    check_odd_layouts(_cuda_op, 'cuda')
    f = U.setup_filter([1, 3, 3, 1])
    x = torch.randn([1, 2, 24, 64, 64], device='cuda', dtype=torch.float16)
    y = U.downsample3d(x, f, down=[2, 2, 1], impl='cuda')
    y_ref = U.downsample3d(x.double(), f.double(), down=[2, 2, 1], impl='ref')
    assert _max_rel_error(y, y_ref) < 1e-2
