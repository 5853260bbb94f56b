# SPDX-License-Identifier: Apache-2.0
"""fma: values and gradients against a * b + c under broadcasting, gradcheck and gradgradcheck in float64."""

from __future__ import annotations

import pytest
import torch

from torch_utils.ops.fma import fma

# (a, b, c) shapes: equal, demodulation-style [N, C, 1, 1, 1] factors, noise-style [N, 1, D, H, W] addend,
# a scalar factor, and an addend with more dimensions than the factors.
SHAPES = [
    ([2, 3, 4], [2, 3, 4], [2, 3, 4]),
    ([2, 3, 4, 5, 6], [2, 3, 1, 1, 1], [2, 1, 4, 5, 6]),
    ([3, 1, 5], [1, 4, 1], [5]),
    ([], [2, 3], [1, 3]),
    ([4, 1], [3], [2, 4, 3]),
]


def leaves(shapes, seed, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in shapes]


@pytest.mark.parametrize('shapes', SHAPES, ids=str)
def test_values_and_gradients(shapes):
    a, b, c = leaves(shapes, seed=0)
    out = fma(a, b, c)
    expected = a * b + c
    torch.testing.assert_close(out, expected, rtol=1e-14, atol=1e-14)
    dout = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    grads = torch.autograd.grad(out, [a, b, c], dout)
    grads_ref = torch.autograd.grad(expected, [a, b, c], dout)
    for grad, grad_ref, leaf in zip(grads, grads_ref, (a, b, c)):
        assert grad.shape == leaf.shape
        torch.testing.assert_close(grad, grad_ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize('shapes', SHAPES, ids=str)
def test_gradcheck(shapes):
    inputs = tuple(leaves(shapes, seed=2))
    assert torch.autograd.gradcheck(fma, inputs)
    assert torch.autograd.gradgradcheck(fma, inputs)


def test_second_derivative_of_product():
    # d/da of (d(fma)/db summed) = 1 per element pair: the backward must itself be differentiable.
    a, b, c = leaves(([2, 3], [2, 3], [3]), seed=3)
    (db,) = torch.autograd.grad(fma(a, b, c).sum(), [b], create_graph=True)
    (dda,) = torch.autograd.grad(db.sum(), [a])
    torch.testing.assert_close(dda, torch.ones_like(a))


def test_mixed_dtypes_give_gradients_in_each_dtype():
    a = torch.randn(2, 3, dtype=torch.float32, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(1, dtype=torch.float32, requires_grad=True)
    da, db, dc = torch.autograd.grad(fma(a, b, c).sum(), [a, b, c])
    assert (da.dtype, db.dtype, dc.dtype) == (a.dtype, b.dtype, c.dtype)
    torch.testing.assert_close(db, a.detach().double().sum(0))
    torch.testing.assert_close(dc, torch.tensor([6.0]))


def test_bad_inputs():
    with pytest.raises(ValueError, match='c must be a torch.Tensor'):
        fma(torch.ones(2), torch.ones(2), 1.0)
    with pytest.raises(ValueError, match='do not broadcast'):
        fma(torch.ones(2), torch.ones(3), torch.ones(2))
