# SPDX-License-Identifier: Apache-2.0
"""3D SSIM / MS-SSIM: the per-axis window and down-sampling rules, a direct formula, identity, noise, shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metrics import ms_ssim


def _smooth_volumes(n: int, shape, seed: int = 0) -> torch.Tensor:
    """[n, 1, D, H, W] in [0, 1]: coarse noise up-sampled, so there is structure at every scale."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand([n, 1] + [max(s // 4, 1) for s in shape], generator=gen)
    return F.interpolate(coarse, size=list(shape), mode='trilinear', align_corners=True)


def test_window_rule():
    assert ms_ssim.window_sizes((24, 64, 64)) == (11, 11, 11)
    assert ms_ssim.window_sizes((8, 5, 12)) == (7, 5, 11)
    assert ms_ssim.window_sizes((1, 10, 2)) == (1, 9, 1)


def test_downsampling_rule_halves_only_axes_with_two_windows():
    x = torch.zeros(1, 1, 24, 64, 64)
    shapes = []
    for _ in range(4):
        x = ms_ssim.downsample(x)
        shapes.append(tuple(x.shape[2:]))
    assert shapes == [(12, 32, 32), (12, 16, 16), (12, 16, 16), (12, 16, 16)]
    y = ms_ssim.downsample(torch.arange(2 * 22 * 2, dtype=torch.float32).reshape(1, 1, 2, 22, 2))
    assert y.shape == (1, 1, 2, 11, 2)
    assert y[0, 0, 0, 0, 0].item() == pytest.approx((0 + 2) / 2)  # Mean of the two voxels along H.


def test_ssim_matches_direct_weighted_statistics():
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 5, 5, 5, generator=gen, dtype=torch.float64)
    y = (x + 0.3 * torch.rand(1, 1, 5, 5, 5, generator=gen, dtype=torch.float64)).clamp(0, 1)
    # Windows of 5 on every axis: valid filtering leaves one position, the Gaussian-weighted whole volume.
    g = np.exp(-((np.arange(5) - 2.0) ** 2) / (2 * 1.5 ** 2))
    w = np.einsum('i,j,k->ijk', g, g, g)
    w /= w.sum()
    a, b = x[0, 0].numpy(), y[0, 0].numpy()
    mx, my = (w * a).sum(), (w * b).sum()
    vx, vy = (w * a * a).sum() - mx ** 2, (w * b * b).sum() - my ** 2
    cxy = (w * a * b).sum() - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    want = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    assert ms_ssim.ssim(x, y).item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize('shape, n', [((24, 64, 64), 2), ((80, 96, 112), 1)])
def test_identical_volumes_give_one(shape, n):
    x = _smooth_volumes(n, shape)
    value = ms_ssim.ms_ssim(x, x.clone())
    assert value.shape == (n, 1)
    torch.testing.assert_close(value, torch.ones(n, 1), atol=1e-5, rtol=0)


def test_value_decreases_with_noise_and_is_symmetric():
    x = _smooth_volumes(2, (24, 64, 64), seed=2)
    gen = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=gen)
    values = [ms_ssim.ms_ssim(x, (x + s * noise).clamp(0, 1)).mean().item() for s in (0.02, 0.1, 0.3)]
    assert 1 > values[0] > values[1] > values[2] > 0
    y = (x + 0.1 * noise).clamp(0, 1)
    torch.testing.assert_close(ms_ssim.ms_ssim(x, y), ms_ssim.ms_ssim(y, x))


def test_best_slice_ssim_finds_the_matching_volume():
    reals = _smooth_volumes(3, (4, 16, 16), seed=4) * 2 - 1  # [-1, 1]
    assert ms_ssim.best_slice_ssim(reals[1], reals, batch_size=2) == pytest.approx(1.0, abs=1e-5)
    noise = torch.rand(1, 4, 16, 16, generator=torch.Generator().manual_seed(5)) * 2 - 1
    assert ms_ssim.best_slice_ssim(noise, reals) < 0.5
    with pytest.raises(ValueError, match='same shape'):
        ms_ssim.best_slice_ssim(noise[:, :2], reals)
