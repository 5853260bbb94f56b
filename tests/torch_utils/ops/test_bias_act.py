# SPDX-License-Identifier: Apache-2.0
"""bias_act: the reference against NumPy formulas, and the plugin path against the reference.

The plugin path (kernel arithmetic, C++ binding, autograd.Function classes) is tested on every machine: a host
build compiles bias_act.cpp with a plain loop over the same per-element code as the CUDA kernel. On a GPU the
real plugin runs the same comparisons. Tolerances (max error relative to max(1, max |reference|)), against a
float64 reference on the same rounded inputs: float64 1e-10; float32 1e-5 (fast-math exp is accurate to a few
ulp); float16 1e-2 and bfloat16 2e-2 (one rounding of a 10- or 7-bit mantissa per stored tensor, and the
derivatives of ref-'y' activations read the rounded output).
"""

from __future__ import annotations

import math
import os
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.utils.cpp_extension

from tests.helpers import nvcc_build
from torch_utils import custom_ops
from torch_utils.ops import bias_act as ba
from torch_utils.ops.bias_act import activation_funcs, bias_act

OPS_DIR = os.path.dirname(ba.__file__)
ACTS = list(activation_funcs)
TOLS = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}
FORMATS = {'contiguous': torch.contiguous_format, 'channels_last_3d': torch.channels_last_3d}
ODD_SHAPE = [3, 5, 7, 9, 11]
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')

#----------------------------------------------------------------------------
# NumPy formulas and input generation.

NP_ACTS = {
    'linear': lambda z, a: z,
    'relu': lambda z, a: np.maximum(z, 0),
    'lrelu': lambda z, a: np.where(z > 0, z, a * z),
    'tanh': lambda z, a: np.tanh(z),
    'sigmoid': lambda z, a: 1 / (1 + np.exp(-z)),
    'elu': lambda z, a: np.where(z > 0, z, np.expm1(z)),
    'selu': lambda z, a: SELU_SCALE * np.where(z > 0, z, SELU_ALPHA * np.expm1(z)),
    'softplus': lambda z, a: np.where(z > 20, z, np.log1p(np.exp(np.minimum(z, 20)))),
    'swish': lambda z, a: z / (1 + np.exp(-z)),
}


def np_bias_act(x, b, dim, act, alpha, gain, clamp):
    z = x if b is None else x + b.reshape([-1 if i == dim % x.ndim else 1 for i in range(x.ndim)])
    y = NP_ACTS[act](z, alpha) * gain
    return y if clamp is None else np.clip(y, -clamp, clamp)


def draw(shape, dim=1, act='linear', gain=1.0, clamp=False, seed=0):
    """float64 (x, b, clamp): |x + b| >= 0.1 (away from kinks); with clamp, |output| is 5% away from the limit."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, shape, generator=g, dtype=torch.float64) * 2 - 1
    z = sign * (0.1 + 1.9 * torch.rand(shape, generator=g, dtype=torch.float64))
    b = 0.5 * torch.randn(shape[dim], generator=g, dtype=torch.float64)
    limit = None
    if clamp:
        out = torch.from_numpy(NP_ACTS[act](z.numpy(), 0.2)) * gain
        limit = 0.75 * out.abs().max().item()
        near = ((out.abs() - limit).abs() < 0.05 * limit).flatten()
        safe = z.flatten()[(out.abs() < 0.95 * limit).flatten()]
        z.view(-1)[near] = safe[torch.randint(len(safe), (int(near.sum()),), generator=g)]
    x = z - b.reshape([-1 if i == dim % len(shape) else 1 for i in range(len(shape))])
    return x, b, limit


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float) -> None:
    assert actual.shape == expected.shape
    scale = max(1.0, expected.abs().max().item())
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= tol * scale, f'max error {err:.3g} > {tol:.1g} * {scale:.3g}'

#----------------------------------------------------------------------------
# Reference implementation against NumPy.


def test_activation_table():
    expected = {'linear': (0, 1, ''), 'relu': (0, math.sqrt(2), 'y'), 'lrelu': (0.2, math.sqrt(2), 'y'),
                'tanh': (0, 1, 'y'), 'sigmoid': (0, 1, 'y'), 'elu': (0, 1, 'y'), 'selu': (0, 1, 'y'),
                'softplus': (0, 1, 'y'), 'swish': (0, math.sqrt(2), 'x')}
    assert list(activation_funcs) == list(expected)
    for idx, (name, (alpha, gain, ref)) in enumerate(expected.items(), start=1):
        spec = activation_funcs[name]
        assert (spec.def_alpha, spec.def_gain, spec.ref, spec.cuda_idx) == (alpha, gain, ref, idx)
        assert spec.has_2nd_grad == (name not in ('linear', 'relu', 'lrelu'))


@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('dim', [1, -1])
def test_ref_matches_numpy(act, dim):
    shape = [2, 3, 4, 5, 6]
    x, b, limit = draw(shape, dim, act, clamp=True, seed=1)
    spec = activation_funcs[act]
    cases = [dict(), dict(b=b), dict(b=b, gain=0.7), dict(b=b, clamp=limit), dict(gain=-1.3, clamp=limit, alpha=0.1)]
    for kw in cases:
        y = bias_act(x, dim=dim, act=act, impl='ref', **kw)
        alpha = kw.get('alpha', spec.def_alpha)
        gain = kw.get('gain', spec.def_gain)
        b_np = kw['b'].numpy() if 'b' in kw else None
        expected = np_bias_act(x.numpy(), b_np, dim, act, alpha, gain, kw.get('clamp'))
        np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act', ACTS)
def test_ref_gradcheck(act):
    x, b, limit = draw([2, 3, 2, 2, 3], 1, act, activation_funcs[act].def_gain, clamp=True, seed=2)
    for clamp in (None, limit):
        inputs = (x.clone().requires_grad_(), b.clone().requires_grad_())
        fn = lambda x, b: bias_act(x, b, act=act, clamp=clamp, impl='ref')  # noqa: E731
        assert torch.autograd.gradcheck(fn, inputs)
        assert torch.autograd.gradgradcheck(fn, inputs)


@pytest.mark.parametrize('act', ['linear', 'relu', 'lrelu'])
@pytest.mark.parametrize('gain, alpha, clamp', [(-1.3, 0.1, None), (2.0, 0.0, None), (-0.7, 0.3, 0.4),
                                               (0.0, 0.2, None)])
def test_ref_piecewise_gradients_from_the_output(act, gain, alpha, clamp):
    """linear/relu/lrelu derive their slope from the output: negative and zero gains, alpha 0 and clamping."""
    x, b, _ = draw([2, 3, 2, 2, 3], 1, act, seed=7)
    inputs = (x.clone().requires_grad_(), b.clone().requires_grad_())
    fn = lambda x, b: bias_act(x, b, act=act, gain=gain, alpha=alpha, clamp=clamp, impl='ref')  # noqa: E731
    assert torch.autograd.gradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(fn, inputs)
    # Against autograd over the plain ops.
    spec = activation_funcs[act]
    plain = lambda x, b: ba._bias_act_ref(x, b, 1, spec.func, alpha, gain, -1 if clamp is None else clamp)  # noqa
    for got, want in zip(torch.autograd.grad(fn(*inputs).square().sum(), inputs),
                         torch.autograd.grad(plain(*inputs).square().sum(), inputs)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize('act, clamp, kept', [('lrelu', None, 'y'), ('relu', 1.0, 'y'), ('linear', None, None),
                                              ('linear', 1.0, 'y')])
def test_ref_piecewise_saves_only_the_output(act, clamp, kept):
    x, b, _ = draw([2, 3, 4, 5, 6], 1, act, seed=8)
    x.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = bias_act(x, b, act=act, clamp=clamp, impl='ref')
    if kept is None:
        assert saved == []
    else:
        assert len(saved) == 1 and saved[0].data_ptr() == y.data_ptr()


@pytest.mark.parametrize('dim', [1, 2, -1])
def test_ref_keeps_channels_last_3d(dim):
    x, b, _ = draw([2, 3, 4, 5, 6], dim, seed=3)
    x = x.to(memory_format=torch.channels_last_3d)
    y = bias_act(x, b, dim=dim, act='lrelu', clamp=1.0, impl='ref')
    assert y.is_contiguous(memory_format=torch.channels_last_3d)


def test_bad_arguments():
    x = torch.zeros([1, 2, 3, 3, 3])
    with pytest.raises(ValueError, match='act must be one of'):
        bias_act(x, act='gelu')
    with pytest.raises(ValueError, match='b must be a 1D tensor of length'):
        bias_act(x, torch.zeros(3))
    with pytest.raises(ValueError, match='dim must be'):
        bias_act(x, dim=5)
    with pytest.raises(ValueError, match='impl must be'):
        bias_act(x, impl='triton')
    with pytest.raises(ValueError, match='alpha of lrelu'):
        bias_act(x, act='lrelu', alpha=-0.1)
    with pytest.raises(ValueError, match='floating-point tensor'):
        bias_act(torch.zeros(2, 2, dtype=torch.int64))

#----------------------------------------------------------------------------
# The plugin path against the reference (shared by the host-loop build and the GPU).


def plugin_path(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """The CUDA-path autograd.Function, whatever device the loaded plugin runs on."""
    dim, _, alpha, gain, clamp = ba._parse_args(x, b, dim, act, alpha, gain, clamp, 'cuda')
    return ba._bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)


def compare_with_ref(fn, x64, b64, dtype, memory_format, act, limit, device, seed=0):
    """Forward, first and second derivatives of `fn` in `dtype` against the float64 reference."""
    tol = TOLS[dtype]
    g = torch.Generator().manual_seed(seed)
    x = x64.to(device, dtype).to(memory_format=memory_format).requires_grad_()
    b = b64.to(device, dtype).requires_grad_()
    xr, br = x.detach().double().requires_grad_(), b.detach().double().requires_grad_()
    kw = dict(act=act, clamp=limit)
    y, yr = fn(x, b, **kw), bias_act(xr, br, impl='ref', **kw)
    assert y.dtype == dtype and y.stride() == x.stride()
    assert_close(y, yr, tol)

    dyr = torch.randn(y.shape, generator=g, dtype=torch.float64).to(device).requires_grad_()
    dy = dyr.detach().to(dtype).requires_grad_()
    gx, gb = torch.autograd.grad(y, [x, b], dy, create_graph=True)
    gxr, gbr = torch.autograd.grad(yr, [xr, br], dy.detach().double(), create_graph=True)
    assert_close(gx, gxr, tol)
    assert_close(gb, gbr, tol)

    # Second order, as in R1: differentiate a weighted sum of the gradient w.r.t. x, b and the incoming gradient.
    wx = torch.randn(x.shape, generator=g, dtype=torch.float64).to(device)
    wb = torch.randn(b.shape, generator=g, dtype=torch.float64).to(device)
    second = torch.autograd.grad((gx * wx.to(dtype)).sum() + (gb * wb.to(dtype)).sum(), [x, b, dy],
                                 allow_unused=True, materialize_grads=True)
    dyr = dy.detach().double().requires_grad_()
    gxr, gbr = torch.autograd.grad(yr, [xr, br], dyr, create_graph=True)
    second_r = torch.autograd.grad((gxr * wx).sum() + (gbr * wb).sum(), [xr, br, dyr],
                                   allow_unused=True, materialize_grads=True)
    for actual, expected in zip(second, second_r):
        assert_close(actual, expected, tol)


def check_plugin_gradcheck(fn, act, device):
    x64, b64, limit = draw([2, 3, 2, 3, 2], 1, act, activation_funcs[act].def_gain, clamp=True, seed=4)
    for clamp in (None, limit):
        x = x64.to(device).to(memory_format=torch.channels_last_3d).requires_grad_()
        b = b64.to(device).requires_grad_()
        f = lambda x, b: fn(x, b, act=act, clamp=clamp)  # noqa: E731
        assert torch.autograd.gradcheck(f, (x, b))
        assert torch.autograd.gradgradcheck(f, (x, b))


def check_layouts(fn, device):
    """Odd layouts: a permutation that is neither contiguous nor channels_last, a strided slice, a size-1 dim."""
    x64, b64, _ = draw([2, 4, 3, 5, 6], 1, seed=5)
    permuted = x64.permute(2, 0, 4, 1, 3).contiguous().permute(1, 3, 0, 4, 2)
    assert permuted.stride() != x64.stride() and torch.equal(permuted, x64)
    for x in (permuted, x64[:, :, :, ::2], x64[:, :, :1].to(memory_format=torch.channels_last_3d)):
        x = x.to(device)
        y = fn(x, b64.to(device), act='swish', clamp=1.5)
        assert_close(y, bias_act(x, b64.to(device), act='swish', clamp=1.5, impl='ref'), 1e-12)
        if ba._is_dense(x):
            assert y.stride() == x.stride()

#----------------------------------------------------------------------------
# Host-loop build of the plugin: the kernel's per-element code in a CPU loop behind the real binding.

HOST_LOOP = r'''
// SPDX-License-Identifier: Apache-2.0
// Test launcher: runs the CUDA kernel's per-element code in a plain host loop.
#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include "bias_act.h"

template <class scalar_t>
void bias_act_launch(const bias_act_params& p)
{
    using opmath_t = at::opmath_type<scalar_t>;
    for (int32_t i = 0; i < static_cast<int32_t>(p.numel); i++)
        bias_act_element<scalar_t, opmath_t, int32_t>(p, i);
}

template void bias_act_launch<float>(const bias_act_params& p);
template void bias_act_launch<double>(const bias_act_params& p);
template void bias_act_launch<c10::Half>(const bias_act_params& p);
template void bias_act_launch<c10::BFloat16>(const bias_act_params& p);
'''


@pytest.fixture(scope='module')
def host_plugin(tmp_path_factory):
    if shutil.which('c++') is None:
        pytest.skip('needs a C++ compiler')
    src_dir = tmp_path_factory.mktemp('bias_act_host')
    host_loop = src_dir / 'bias_act_host_loop.cpp'
    host_loop.write_text(HOST_LOOP)
    sources = [str(host_loop), os.path.join(OPS_DIR, 'bias_act.cpp')]
    return custom_ops.get_plugin('bias_act_host_plugin', sources=sources, headers=[os.path.join(OPS_DIR, 'bias_act.h')],
                                 extra_cflags=['-DBIAS_ACT_HOST_LOOP', f'-I{OPS_DIR}'])


@pytest.fixture
def on_host(host_plugin, monkeypatch):
    monkeypatch.setattr(ba, '_plugin', host_plugin)
    return plugin_path


@pytest.mark.slow
@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('dtype', list(TOLS), ids=str)
def test_host_loop_matches_ref(on_host, act, dtype):
    x64, b64, limit = draw(ODD_SHAPE, 1, act, activation_funcs[act].def_gain, clamp=True, seed=6)
    for fmt in FORMATS.values():
        for clamp in (None, limit):
            compare_with_ref(on_host, x64, b64, dtype, fmt, act, clamp, 'cpu')


@pytest.mark.slow
@pytest.mark.parametrize('act', ACTS)
def test_host_loop_gradcheck(on_host, act):
    check_plugin_gradcheck(on_host, act, 'cpu')


@pytest.mark.slow
def test_host_loop_layouts(on_host):
    check_layouts(on_host, 'cpu')


@pytest.mark.slow
def test_host_loop_clamped_gradient_is_zero(on_host):
    x = torch.tensor([[-3.0, -0.5, 0.25, 2.0]], dtype=torch.float64, requires_grad=True)
    y = on_host(x, act='lrelu', clamp=1.0)
    (dx,) = torch.autograd.grad(y.sum(), [x])
    s2 = math.sqrt(2)
    torch.testing.assert_close(y.detach(), torch.tensor([[-0.6 * s2, -0.1 * s2, 0.25 * s2, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(dx, torch.tensor([[0.2 * s2, 0.2 * s2, s2, 0.0]], dtype=torch.float64))


@pytest.mark.slow
def test_binding_checks(host_plugin):
    x = torch.randn(2, 3, 4)
    empty = x.new_empty([0])
    with pytest.raises(RuntimeError, match='same dtype'):
        host_plugin.bias_act(x, torch.zeros(3, dtype=torch.float64), empty, empty, empty, 0, 3, 0.2, 1.0, -1.0, 1)
    with pytest.raises(RuntimeError, match='as many elements'):
        host_plugin.bias_act(x, torch.zeros(4), empty, empty, empty, 0, 3, 0.2, 1.0, -1.0, 1)
    with pytest.raises(RuntimeError, match='yref is required'):
        host_plugin.bias_act(x, empty, empty, empty, empty, 1, 3, 0.2, 1.0, -1.0, 1)
    with pytest.raises(RuntimeError, match='same strides'):
        host_plugin.bias_act(x, empty, empty, x.transpose(1, 2).contiguous().transpose(1, 2), empty, 1, 3, 0.2,
                             1.0, -1.0, 1)
    with pytest.raises(RuntimeError, match='non-overlapping and dense'):
        host_plugin.bias_act(x[:, :, ::2], empty, empty, empty, empty, 0, 1, 0.0, 1.0, -1.0, 1)
    with pytest.raises(RuntimeError, match='unknown activation'):
        host_plugin.bias_act(x, empty, empty, empty, empty, 0, 10, 0.0, 1.0, -1.0, 1)

def test_failed_plugin_build_raises(monkeypatch):
    def broken_build(*args, **kwargs):
        raise RuntimeError('Could not build PyTorch plugin "bias_act_plugin": nvcc: error')

    monkeypatch.setattr(ba, '_plugin', None)
    monkeypatch.setattr(custom_ops, 'get_plugin', broken_build)
    with pytest.raises(RuntimeError, match='nvcc: error'):
        ba._init()

#----------------------------------------------------------------------------
# The CUDA sources compile with nvcc (also without a GPU, e.g. with a CPU-only torch).


@pytest.mark.slow
@pytest.mark.skipif(nvcc_build.find_nvcc() is None, reason='needs nvcc')
def test_cuda_sources_compile(tmp_path):
    symbols = nvcc_build.compile_symbols(os.path.join(OPS_DIR, 'bias_act.cu'), tmp_path, ['--use_fast_math'])
    for dtype in ('float', 'double', 'c10::Half', 'c10::BFloat16'):
        assert f'void bias_act_launch<{dtype}>(bias_act_params const&)' in symbols

#----------------------------------------------------------------------------
# The real plugin on a GPU.


@requires_cuda
@pytest.mark.parametrize('act', ACTS)
@pytest.mark.parametrize('dtype', list(TOLS), ids=str)
@pytest.mark.parametrize('fmt', list(FORMATS))
def test_cuda_matches_ref(act, dtype, fmt):
    x64, b64, limit = draw(ODD_SHAPE, 1, act, activation_funcs[act].def_gain, clamp=True, seed=7)
    fn = lambda x, b, **kw: bias_act(x, b, impl='cuda', **kw)  # noqa: E731
    for clamp in (None, limit):
        compare_with_ref(fn, x64, b64, dtype, FORMATS[fmt], act, clamp, 'cuda')


@requires_cuda
@pytest.mark.parametrize('act', ACTS)
def test_cuda_gradcheck(act):
    check_plugin_gradcheck(lambda x, b, **kw: bias_act(x, b, impl='cuda', **kw), act, 'cuda')


@requires_cuda
def test_cuda_layouts_and_plugin_is_used():
    check_layouts(lambda x, b, **kw: bias_act(x, b, impl='cuda', **kw), 'cuda')
    assert ba._plugin is not None and ba._plugin.__name__ == 'bias_act_plugin'


if __name__ == '__main__':
    sys.exit(pytest.main([__file__, '-x', '-q']))
