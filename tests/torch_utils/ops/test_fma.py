# SPDX-License-Identifier: Apache-2.0
"""fma: values and gradients against a * b + c under broadcasting, gradcheck and gradgradcheck in float64."""

from __future__ import annotations

import os
import subprocess
import sys

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


@pytest.mark.slow
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
    with pytest.raises(ValueError, match='do not broadcast'):  # a clash in front of the shortest shape
        fma(torch.ones([2, 3, 4]), torch.ones([5, 3, 4]), torch.ones([4]))
    assert fma(torch.ones([2, 1, 4]), torch.ones([3, 1]), torch.ones([])).shape == (2, 3, 4)


@pytest.mark.slow
def test_no_sympy_import():
    """The shape check must not pull in sympy (torch.broadcast_shapes does: ~34 MB in every training process)."""
    code = ('import sys, torch; from torch_utils.ops.fma import fma; '
            'fma(torch.ones(2, 1), torch.ones(3), torch.ones(1)); print("sympy" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__)))))
    assert out.stdout.strip() == 'False'


#----------------------------------------------------------------------------
# Dtypes and memory formats against float64: values, broadcast gradients and an R1-style second derivative.
# Tolerances, max error relative to max |reference|: float64 1e-12, float32 1e-5, float16 1e-2, bfloat16 2e-2.

TOLERANCE = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def _max_rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.detach().cpu().double() - b.detach().double()).abs().max() / b.detach().abs().max()).item()


def check_dtype(device: str, dtype: torch.dtype) -> None:
    shapes = ([2, 3, 5, 7, 9], [2, 3, 1, 1, 1], [2, 1, 5, 7, 9])  # modulated-conv style: x * style + noise
    a, b, c = (t.detach().to(device, dtype) for t in leaves(shapes, seed=4))
    a = a.to(memory_format=torch.channels_last_3d).requires_grad_()
    b, c = b.requires_grad_(), c.requires_grad_()
    ar, br, cr = (t.detach().cpu().double().requires_grad_() for t in (a, b, c))
    out, ref = fma(a, b, c), ar * br + cr
    tol = TOLERANCE[dtype]
    assert out.dtype == dtype and _max_rel_error(out, ref) < tol
    dout = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    grads = torch.autograd.grad(out, [a, b, c], dout.to(device, dtype), create_graph=True)
    grads_ref = torch.autograd.grad(ref, [ar, br, cr], dout, create_graph=True)
    for grad, grad_ref, leaf in zip(grads, grads_ref, (a, b, c)):
        assert grad.shape == leaf.shape and grad.dtype == dtype and _max_rel_error(grad, grad_ref) < tol
    (dda,) = torch.autograd.grad((grads[1].double() ** 2).sum(), [a])  # d/da of |dL/db|^2
    (dda_ref,) = torch.autograd.grad((grads_ref[1] ** 2).sum(), [ar])
    assert _max_rel_error(dda, dda_ref) < tol


@pytest.mark.parametrize('dtype', list(TOLERANCE), ids=str)
def test_dtypes_on_cpu(dtype):
    check_dtype('cpu', dtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('dtype', list(TOLERANCE), ids=str)
def test_dtypes_on_cuda(dtype):
    check_dtype('cuda', dtype)
