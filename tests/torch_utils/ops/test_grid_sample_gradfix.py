# SPDX-License-Identifier: Apache-2.0
"""The gather-based fallback sampler against F.grid_sample, and its second derivatives."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import grid_sample_gradfix


def random_grid(n, h, w, spread=1.3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand([n, h, w, 2], generator=gen, dtype=torch.float64) * 2 - 1) * spread  # Some outside.


@pytest.mark.parametrize('shape', [(2, 3, 5, 7), (1, 1, 8, 8)])
def test_fallback_matches_native(shape):
    x = torch.randn(shape, dtype=torch.float64)
    grid = random_grid(shape[0], 6, 9)
    want = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    got = grid_sample_gradfix.grid_sample(x, grid, force_fallback=True)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-12)


def test_fallback_gradcheck_and_gradgradcheck():
    x = torch.randn([1, 2, 4, 5], dtype=torch.float64, requires_grad=True)
    grid = random_grid(1, 3, 4, seed=1)
    fn = lambda x: grid_sample_gradfix.grid_sample(x, grid, force_fallback=True)  # noqa: E731
    assert torch.autograd.gradcheck(fn, [x])
    assert torch.autograd.gradgradcheck(fn, [x])


def test_probe_reports_this_torch():
    # torch 2.13 (the tested version) differentiates grid_sample twice; the probe must say so.
    major, minor = (int(v) for v in torch.__version__.split('.')[:2])
    if (major, minor) >= (2, 13):
        assert grid_sample_gradfix.native_has_double_backward()
