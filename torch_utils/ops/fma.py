# SPDX-License-Identifier: Apache-2.0
"""Fused multiply-add `a * b + c` with broadcasting, in one kernel (torch.addcmul).

The autograd.Function sums each gradient over the dimensions its input was broadcast along, and its backward
uses only differentiable ops, so second derivatives work (modulated convolutions apply demodulation and noise
with it, and R1 differentiates through them).
"""

from __future__ import annotations

import itertools

import torch

#----------------------------------------------------------------------------


def fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Return `a * b + c`, broadcasting the three tensors against each other.

    Args:
        a: First factor.
        b: Second factor.
        c: Addend.

    Returns:
        A tensor of the broadcast shape of `a`, `b` and `c`.
    """
    for name, t in (('a', a), ('b', b), ('c', c)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f'fma: {name} must be a torch.Tensor, got {type(t).__name__}')
    if not _broadcastable(a.shape, b.shape, c.shape):
        raise ValueError(f'fma: shapes {tuple(a.shape)}, {tuple(b.shape)} and {tuple(c.shape)} do not broadcast')
    return _FusedMultiplyAdd.apply(a, b, c)


def _broadcastable(*shapes: torch.Size) -> bool:
    """Whether the shapes broadcast together. (torch.broadcast_shapes would do, but its first call imports sympy,
    about 34 MB of resident memory in every training process.)"""
    for sizes in itertools.zip_longest(*(reversed(s) for s in shapes), fillvalue=1):  # Missing dims broadcast.
        if len({size for size in sizes if size != 1}) > 1:
            return False
    return True

#----------------------------------------------------------------------------


def _unbroadcast(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum `x` over the dimensions that broadcasting added or expanded, giving a tensor of `shape`."""
    extra = x.ndim - len(shape)
    dims = [i for i in range(x.ndim) if i < extra or (shape[i - extra] == 1 and x.shape[i] != 1)]
    if dims:
        x = x.sum(dims, keepdim=True)
    return x.reshape(shape)  # Drops the leading size-1 dimensions left by the keepdim sum.


class _FusedMultiplyAdd(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, c):  # pylint: disable=arguments-differ
        out = torch.addcmul(c, a, b)
        ctx.save_for_backward(a, b)
        ctx.c_meta = (c.shape, c.dtype)
        return out

    @staticmethod
    def backward(ctx, dout):  # pylint: disable=arguments-differ
        a, b = ctx.saved_tensors
        c_shape, c_dtype = ctx.c_meta
        da = db = dc = None
        if ctx.needs_input_grad[0]:
            da = _unbroadcast(dout * b, a.shape).to(a.dtype)
        if ctx.needs_input_grad[1]:
            db = _unbroadcast(dout * a, b.shape).to(b.dtype)
        if ctx.needs_input_grad[2]:
            dc = _unbroadcast(dout, c_shape).to(c_dtype)
        return da, db, dc
