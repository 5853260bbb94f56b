# SPDX-License-Identifier: Apache-2.0
"""Fused bias + activation + gain + clamp (bias_act), for tensors of any rank and memory format.

The op computes `clamp(act(x + b) * gain, -clamp, clamp)`, with the bias broadcast along one dimension `dim`.
Two implementations give the same result:
  - a pure-PyTorch reference (`impl='ref'`, or any tensor not on a CUDA device), differentiated by autograd
    (linear, relu and lrelu through an autograd.Function that saves only the output);
  - a CUDA plugin (`impl='cuda'` on a CUDA tensor) that does each pass in one element-wise kernel. Its
    autograd.Function computes the gradient with another autograd.Function, so second derivatives (needed by
    R1 and path-length regularisation) work on both paths. Third derivatives are not supported.

Derivatives on the CUDA path are computed from the saved input x (ref 'x') or output y (ref 'y'), whichever the
activation needs; where the output was clamped the gradient is zero.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import custom_ops, misc, ops

#----------------------------------------------------------------------------
# The activations. `ref` names the tensor the CUDA path derives gradients from; `cuda_idx` is the kernel's code.


def _lrelu(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return F.leaky_relu(x, alpha)


def _swish(x: torch.Tensor, alpha: float) -> torch.Tensor:
    return torch.sigmoid(x) * x


def _ignore_alpha(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor, float], torch.Tensor]:
    return lambda x, alpha: fn(x)


activation_funcs = {
    'linear':   dnnlib.EasyDict(func=_ignore_alpha(lambda x: x), def_alpha=0,   def_gain=1,            cuda_idx=1,
                                ref='',  has_2nd_grad=False),
    'relu':     dnnlib.EasyDict(func=_ignore_alpha(torch.relu),  def_alpha=0,   def_gain=math.sqrt(2), cuda_idx=2,
                                ref='y', has_2nd_grad=False),
    'lrelu':    dnnlib.EasyDict(func=_lrelu,                     def_alpha=0.2, def_gain=math.sqrt(2), cuda_idx=3,
                                ref='y', has_2nd_grad=False),
    'tanh':     dnnlib.EasyDict(func=_ignore_alpha(torch.tanh),  def_alpha=0,   def_gain=1,            cuda_idx=4,
                                ref='y', has_2nd_grad=True),
    'sigmoid':  dnnlib.EasyDict(func=_ignore_alpha(torch.sigmoid), def_alpha=0, def_gain=1,            cuda_idx=5,
                                ref='y', has_2nd_grad=True),
    'elu':      dnnlib.EasyDict(func=_ignore_alpha(F.elu),       def_alpha=0,   def_gain=1,            cuda_idx=6,
                                ref='y', has_2nd_grad=True),
    'selu':     dnnlib.EasyDict(func=_ignore_alpha(F.selu),      def_alpha=0,   def_gain=1,            cuda_idx=7,
                                ref='y', has_2nd_grad=True),
    'softplus': dnnlib.EasyDict(func=_ignore_alpha(F.softplus),  def_alpha=0,   def_gain=1,            cuda_idx=8,
                                ref='y', has_2nd_grad=True),
    'swish':    dnnlib.EasyDict(func=_swish,                     def_alpha=0,   def_gain=math.sqrt(2), cuda_idx=9,
                                ref='x', has_2nd_grad=True),
}

#----------------------------------------------------------------------------
# Plugin loading.

_plugin = None


def _init() -> bool:
    """Build and load the CUDA plugin on first use; a failed build raises (no silent fallback)."""
    global _plugin
    if _plugin is None:
        _plugin = custom_ops.get_plugin('bias_act_plugin', sources=['bias_act.cpp', 'bias_act.cu'],
                                        headers=['bias_act.h'], source_dir=os.path.dirname(__file__),
                                        extra_cuda_cflags=['--use_fast_math'])
    return True

#----------------------------------------------------------------------------
# Public entry point.


def bias_act(x: torch.Tensor, b: torch.Tensor | None = None, dim: int = 1, act: str = 'linear',
             alpha: float | None = None, gain: float | None = None, clamp: float | None = None,
             impl: str = 'cuda') -> torch.Tensor:
    r"""Add a bias along one dimension, apply an activation, scale by a gain and clamp.

    Computes `clamp(act(x + b) * gain, -clamp, clamp)` in one pass on the CUDA path; first and second derivatives
    with respect to `x` and `b` are supported on both paths. The output has the memory format of `x`.

    Args:
        x: Input tensor of any shape, e.g. `[N, C, D, H, W]`, any floating dtype and memory format.
        b: Bias of shape `[x.shape[dim]]`, or None. It is cast to the dtype of `x`.
        dim: Dimension of `x` the bias runs along (negative values count from the end).
        act: One of the names in `activation_funcs`: linear, relu, lrelu, tanh, sigmoid, elu, selu, softplus, swish.
        alpha: Negative slope of lrelu (>= 0; the other activations ignore it). None: the activation's default.
        gain: Factor applied after the activation. None: the activation's default (e.g. sqrt(2) for lrelu).
        clamp: Clamp the output to `[-clamp, clamp]`. None or a negative value: no clamping.
        impl: 'cuda' uses the CUDA plugin for CUDA tensors (building it on first use; a failed build raises);
            'ref' always uses the PyTorch reference.

    Returns:
        A tensor with the shape, dtype and memory format of `x`.
    """
    dim, spec, alpha, gain, clamp = _parse_args(x, b, dim, act, alpha, gain, clamp, impl)
    if b is not None:
        b = b.to(x.dtype)
    if impl == 'cuda' and ops.plugins_active() and x.device.type == 'cuda' and _init():
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)
    if act in _SLOPE_FROM_OUTPUT:
        return _bias_act_ref_piecewise(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    return _bias_act_ref(x, b, dim=dim, func=spec.func, alpha=alpha, gain=gain, clamp=clamp)


def _parse_args(x, b, dim, act, alpha, gain, clamp, impl) -> tuple[int, dnnlib.EasyDict, float, float, float]:
    """Validate the arguments; return (dim >= 0, activation spec, alpha, gain, clamp or -1)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise ValueError(f'bias_act: x must be a floating-point tensor, got {type(x).__name__}')
    if act not in activation_funcs:
        raise ValueError(f'bias_act: act must be one of {", ".join(activation_funcs)}, got {act!r}')
    if impl not in ('cuda', 'ref'):
        raise ValueError(f"bias_act: impl must be 'cuda' or 'ref', got {impl!r}")
    if not isinstance(dim, int) or not -x.ndim <= dim < x.ndim:
        raise ValueError(f'bias_act: dim must be an int in [{-x.ndim}, {x.ndim}) for a {x.ndim}D input, got {dim!r}')
    dim = dim % x.ndim
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f'bias_act: b must be a 1D tensor of length x.shape[{dim}] = {x.shape[dim]}, '
                             f'got {tuple(b.shape) if isinstance(b, torch.Tensor) else type(b).__name__}')
        if b.device != x.device:
            raise ValueError(f'bias_act: b must be on the device of x ({x.device}), got {b.device}')
    spec = activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(clamp if clamp is not None and clamp >= 0 else -1)
    if act == 'lrelu' and alpha < 0:
        raise ValueError(f'bias_act: alpha of lrelu must be >= 0, got {alpha}')
    return dim, spec, alpha, gain, clamp

#----------------------------------------------------------------------------
# Reference implementation: plain PyTorch ops, any device, derivatives of any order by autograd.


@misc.profiled_function
def _bias_act_ref(x: torch.Tensor, b: torch.Tensor | None, dim: int, func: Callable, alpha: float, gain: float,
                  clamp: float) -> torch.Tensor:
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])  # [C] -> e.g. [1, C, 1, 1, 1]
    x = func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x

#----------------------------------------------------------------------------
# Reference path of the piecewise-linear activations (linear, relu, lrelu): one autograd.Function that computes
# in place on one new tensor and saves only its output y. Their slope at each element follows from the sign of y
# (and |y| against the clamp), so backward needs neither x nor x + b, and y is what the next layer keeps for its
# own backward anyway: per layer, one activation-sized tensor less than autograd over the plain ops saves.
# Backward is `dy * slope` with the slope a constant, so it is itself differentiable (R1, path length); the
# second derivative through the slope is zero, as for the plain ops.

_SLOPE_FROM_OUTPUT = ('linear', 'relu', 'lrelu')


def _backward_from_output(dy: torch.Tensor, y: torch.Tensor | None, act: str, alpha: float, gain: float,
                          clamp: float) -> torch.Tensor:
    """dy times d y / d (x + b), the slope read from the output y (a constant: the second derivative is zero)."""
    y = None if y is None else y.detach()
    dx = dy
    if act != 'linear' and gain > 0:
        # act(t) * gain > 0 exactly where t > 0; one fused kernel each, themselves differentiable in dy.
        dx = torch.ops.aten.leaky_relu_backward(dy, y, alpha, True) if act == 'lrelu' else \
            torch.ops.aten.threshold_backward(dy, y, 0)
    elif act != 'linear':
        rising = y < 0  # A negative gain flips the sign of the output (gain 0: the gain below zeroes it all).
        dx = torch.where(rising, dy, dy * (alpha if act == 'lrelu' else 0.0))
    if gain != 1:
        dx = dx * gain
    if clamp >= 0:
        dx = dx * (y.abs() < clamp)  # Clamped elements pass no gradient.
    return dx


class _BiasActPiecewise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp):  # pylint: disable=arguments-differ
        if b is not None:
            y = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])  # [C] -> e.g. [1, C, 1, 1, 1]
        else:
            y = x.clone(memory_format=torch.preserve_format)
        if act == 'lrelu':
            F.leaky_relu_(y, alpha)
        elif act == 'relu':
            y.relu_()
        if gain != 1:
            y.mul_(gain)
        if clamp >= 0:
            y.clamp_(-clamp, clamp)
        ctx.dim, ctx.act, ctx.alpha, ctx.gain, ctx.clamp = dim, act, alpha, gain, clamp
        ctx.save_for_backward(y if act != 'linear' or clamp >= 0 else None)
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        y, = ctx.saved_tensors
        dx = _backward_from_output(dy, y, ctx.act, ctx.alpha, ctx.gain, ctx.clamp)
        db = None
        if ctx.needs_input_grad[1]:
            db = dx.sum([i for i in range(dx.ndim) if i != ctx.dim])
        return (dx if ctx.needs_input_grad[0] else None), db, None, None, None, None, None


@misc.profiled_function
def _bias_act_ref_piecewise(x: torch.Tensor, b: torch.Tensor | None, dim: int, act: str, alpha: float, gain: float,
                            clamp: float) -> torch.Tensor:
    return _BiasActPiecewise.apply(x, b, dim, act, alpha, gain, clamp)

#----------------------------------------------------------------------------
# CUDA implementation: helpers that give every operand the strides of a dense reference tensor.


def _is_dense(t: torch.Tensor) -> bool:
    """True if `t` covers its memory exactly once (some permutation of a contiguous layout)."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _dense(t: torch.Tensor) -> torch.Tensor:
    return t if t.numel() == 0 or _is_dense(t) else t.contiguous()


def _like(t: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    """`t` with the strides of the dense tensor `ref`; None becomes an empty tensor (the plugin's 'absent')."""
    if t is None:
        return ref.new_empty([0])
    if t.stride() == ref.stride():
        return t
    return torch.empty_like(ref).copy_(t)  # empty_like keeps the exact strides of a dense tensor.


def _bias(b: torch.Tensor | None, ref: torch.Tensor) -> torch.Tensor:
    return ref.new_empty([0]) if b is None else b.contiguous()


def _sum_to_bias(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t.sum([i for i in range(t.ndim) if i != dim])  # e.g. [N, C, D, H, W] -> [C]

#----------------------------------------------------------------------------
# CUDA implementation: autograd.Function classes, one pair per static configuration.

_cuda_cache: dict[tuple, type] = {}


def _bias_act_cuda(dim: int, act: str, alpha: float, gain: float, clamp: float) -> type:
    """The autograd.Function computing bias_act with the plugin for one (dim, act, alpha, gain, clamp)."""
    key = (dim, act, alpha, gain, clamp)
    if key not in _cuda_cache:
        _cuda_cache[key] = _make_cuda_function(*key)
    return _cuda_cache[key]


def _make_cuda_function(dim: int, act: str, alpha: float, gain: float, clamp: float) -> type:
    spec = activation_funcs[act]
    static = (spec.cuda_idx, alpha, gain, clamp, dim)
    identity_grad = act == 'linear' and gain == 1 and clamp < 0

    def run(main, ref, b, xref, yref, dy, grad):
        """Call the plugin with every operand laid out like the dense tensor `ref`."""
        return _plugin.bias_act(_like(main, ref), _bias(b, ref), _like(xref, ref), _like(yref, ref), _like(dy, ref),
                                grad, *static)

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):  # pylint: disable=arguments-differ
            x_dense = _dense(x)
            y = run(x_dense, x_dense, b, None, None, None, 0)
            # Save only what the derivatives read: x and b for ref 'x', y for ref 'y' and for the clamp mask.
            ctx.save_for_backward(x if spec.ref == 'x' else None, b if spec.ref == 'x' else None,
                                  y if spec.ref == 'y' or clamp >= 0 else None)
            return y

        @staticmethod
        def backward(ctx, dy):  # pylint: disable=arguments-differ
            x, b, y = ctx.saved_tensors
            dx = db = None
            if ctx.needs_input_grad[0] or ctx.needs_input_grad[1]:
                dx = dy if identity_grad else BiasActCudaGrad.apply(dy, x, b, y)
            if ctx.needs_input_grad[1]:
                db = _sum_to_bias(dx, dim)
            return dx, db

    class BiasActCudaGrad(torch.autograd.Function):
        """dL/dx = dL/dy * gain * act'(x + b), zero where clamped; linear in dL/dy, differentiable in x, b, y."""

        @staticmethod
        def forward(ctx, dy, x, b, y):  # pylint: disable=arguments-differ
            ref = _dense(y if y is not None else x if x is not None else dy)
            dx = run(dy, ref, b, x, y, None, 1)
            ctx.save_for_backward(dy if spec.has_2nd_grad else None, x, b, y)
            return dx

        @staticmethod
        def backward(ctx, d_dx):  # pylint: disable=arguments-differ
            dy, x, b, y = ctx.saved_tensors
            d_dy = d_x = d_b = d_y = None
            if ctx.needs_input_grad[0]:
                d_dy = BiasActCudaGrad.apply(d_dx, x, b, y)  # The gradient is linear in dy.
            if spec.has_2nd_grad and any(ctx.needs_input_grad[1:]):
                ref = _dense(y if y is not None else x)
                d2 = run(d_dx, ref, b, x, y, dy, 2)
                if spec.ref == 'x':
                    d_x = d2
                    d_b = _sum_to_bias(d2, dim) if ctx.needs_input_grad[2] else None
                else:
                    d_y = d2  # Reaches x and b through the forward op that produced y.
            return d_dy, d_x, d_b, d_y

    return BiasActCuda
