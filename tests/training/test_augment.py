# SPDX-License-Identifier: Apache-2.0
"""AugmentPipe: identity at p = 0, slice consistency, per-volume draws, official distributions, what each
transform does to real images, float64 gradients of first and second order, the ADA update and the preview CLI."""

from __future__ import annotations

import json
import math
import os
import pickle

import numpy as np
import PIL.Image
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from training import augment
from training.augment import AUGPIPE_SPECS, AugmentPipe, imgfilter_bank, update_ada_p

NOISY = ('noise', 'bgcfn', 'bgcfnc')
BIG = 20000  # Volumes per statistics test: standard errors of about 1 %.


def _pipe(p: float = 1, **kwargs) -> AugmentPipe:
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe


def _blob(H: int = 32, W: int = 32, cx: float = 16, cy: float = 16, sigma: float = 3, N: int = 1,
          D: int = 1) -> torch.Tensor:
    """Gaussian blob [N, 1, D, H, W] in float64; (cx, cy) in pixels from the top-left edge."""
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing='ij')
    img = torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma ** 2)).double()
    return img.expand(N, 1, D, H, W).clone()


def _centroid(x: torch.Tensor) -> torch.Tensor:
    """Centre of mass (x, y) in pixels from the top-left edge of every slice: [N, 2]."""
    H, W = x.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing='ij')
    img = x[:, 0, 0]
    mass = img.sum(dim=(1, 2))
    return torch.stack([(img * xs).sum(dim=(1, 2)) / mass, (img * ys).sum(dim=(1, 2)) / mass], dim=1)

#----------------------------------------------------------------------------
# Presets and identity.


def test_presets_as_the_official_table():
    blit, geom = ['xflip', 'rotate90', 'xint'], ['scale', 'rotate', 'aniso', 'xfrac']
    color = ['brightness', 'contrast', 'lumaflip', 'hue', 'saturation']
    expected = dict(blit=blit, geom=geom, color=color, filter=['imgfilter'], noise=['noise'], cutout=['cutout'],
                    bg=blit + geom, bgc=blit + geom + color, bgcf=blit + geom + color + ['imgfilter'],
                    bgcfn=blit + geom + color + ['imgfilter', 'noise'],
                    bgcfnc=blit + geom + color + ['imgfilter', 'noise', 'cutout'])
    assert set(AUGPIPE_SPECS) == set(expected)
    for name, keys in expected.items():
        assert AUGPIPE_SPECS[name] == {k: 1 for k in keys}, name


@pytest.mark.parametrize('preset', sorted(AUGPIPE_SPECS))
@pytest.mark.parametrize('channels', [1, 3])
def test_p_zero_returns_input_exactly(preset, channels):
    torch.manual_seed(0)
    x = torch.randn(3, channels, 4, 32, 32)
    assert torch.equal(_pipe(0, **AUGPIPE_SPECS[preset])(x), x)


def test_p_buffer_starts_at_one_and_survives_pickling():
    pipe = AugmentPipe(**AUGPIPE_SPECS['bgc'])
    assert float(pipe.p) == 1 and 'p' in dict(pipe.named_buffers())
    pipe.p.fill_(0.3)
    clone = pickle.loads(pickle.dumps(pipe))
    assert float(clone.p) == pytest.approx(0.3)
    torch.manual_seed(5)
    x = torch.randn(2, 1, 2, 32, 32)
    torch.manual_seed(6)
    y1 = pipe(x)
    torch.manual_seed(6)
    assert torch.equal(clone(x), y1)

#----------------------------------------------------------------------------
# Slice consistency and per-volume independence.


@pytest.mark.parametrize('preset', [p for p in sorted(AUGPIPE_SPECS) if p not in NOISY])
@pytest.mark.parametrize('channels,sequences', [(1, False), (3, False), (2, True)])
def test_identical_slices_stay_identical(preset, channels, sequences):
    torch.manual_seed(1)
    slab = torch.randn(4, channels, 1, 32, 32)
    x = slab.expand(4, channels, 5, 32, 32).contiguous()  # Every slice of a volume is the same.
    y = _pipe(1, channels_are_sequences=sequences, **AUGPIPE_SPECS[preset])(x)
    assert not torch.equal(y, x)
    torch.testing.assert_close(y, y[:, :, :1].expand_as(y), rtol=0, atol=1e-6)


@pytest.mark.parametrize('channels', [1, 3])
def test_identical_slices_stay_identical_with_every_transform_but_noise(channels):
    torch.manual_seed(1)
    x = torch.randn(4, channels, 1, 32, 32).expand(4, channels, 5, 32, 32).contiguous()
    y = _pipe(1, **dict(AUGPIPE_SPECS['bgcfnc'], noise=0))(x)  # Cutout and imgfilter on top of bgc.
    assert (y == 0).any() and not torch.equal(y, x)
    torch.testing.assert_close(y, y[:, :, :1].expand_as(y), rtol=0, atol=1e-6)


def test_noise_is_drawn_per_voxel():
    x = torch.zeros(2, 1, 3, 32, 32)
    torch.manual_seed(2)
    y = _pipe(1, noise=1)(x)
    assert not torch.allclose(y[:, :, 0], y[:, :, 1])


@pytest.mark.parametrize('preset', ['bgc', 'bgcfnc'])
def test_identical_volumes_get_different_parameters(preset):
    torch.manual_seed(3)
    x = torch.randn(1, 1, 3, 32, 32).expand(2, 1, 3, 32, 32).contiguous()
    pipe = _pipe(1, **AUGPIPE_SPECS[preset])
    params = pipe.sample_params(x.shape)
    continuous = ['scale', 'rotate_pre', 'aniso', 'rotate_post', 'xfrac', 'brightness', 'contrast']
    continuous += ['imgfilter', 'noise', 'cutout_center'] if preset == 'bgcfnc' else []
    for name in continuous:  # At p = 1 each is drawn, and two draws of a continuous variable differ.
        assert not torch.equal(params[name][0], params[name][1]), name
    y = pipe.apply_params(x, params)
    assert (y[0] - y[1]).abs().max() > 0.1

#----------------------------------------------------------------------------
# Parameter distributions (drawn by the pipe itself through sample_params).


def _params(p: float = 1, shape=(BIG, 1, 1, 64, 48), **kwargs):
    torch.manual_seed(4)
    return _pipe(p, **kwargs).sample_params(shape)


def test_blit_distributions():
    P = _params(xflip=1, rotate90=1, xint=1)
    assert set(P.xflip.unique().tolist()) == {0, 1} and P.xflip.mean() == pytest.approx(0.5, abs=0.015)
    counts = torch.bincount(P.rotate90.long(), minlength=4).double() / BIG
    torch.testing.assert_close(counts, torch.full([4], 0.25, dtype=torch.float64), rtol=0, atol=0.015)
    assert torch.equal(P.xint, P.xint.round())
    for axis, size in enumerate([48, 64]):  # x uses W, y uses H.
        assert P.xint[:, axis].abs().max() == round(0.125 * size)
        assert P.xint[:, axis].double().std() == pytest.approx(0.125 * size / math.sqrt(3), rel=0.03)


def test_geometry_distributions():
    P = _params(scale=1, rotate=1, aniso=1, xfrac=1)
    assert P.scale.log2().std() == pytest.approx(0.2, rel=0.03)
    assert P.aniso.log2().std() == pytest.approx(0.2, rel=0.03)
    for angle in (P.rotate_pre, P.rotate_post):  # At p = 1 both rotations always happen, uniform in (-pi, pi).
        assert (angle != 0).all() and angle.abs().max() <= math.pi
        assert angle.std() == pytest.approx(math.pi / math.sqrt(3), rel=0.03)
    assert P.xfrac[:, 0].std() == pytest.approx(0.125 * 48, rel=0.03)
    assert P.xfrac[:, 1].std() == pytest.approx(0.125 * 64, rel=0.03)


@pytest.mark.parametrize('p', [0.3, 0.5])
def test_two_rotations_make_one_with_probability_rotate_times_p(p):
    P = _params(p, rotate=1)
    p_rot = 1 - math.sqrt(1 - p)
    assert (P.rotate_pre != 0).double().mean() == pytest.approx(p_rot, abs=0.015)
    assert (P.rotate_post != 0).double().mean() == pytest.approx(p_rot, abs=0.015)
    assert ((P.rotate_pre != 0) | (P.rotate_post != 0)).double().mean() == pytest.approx(p, abs=0.015)


def test_transforms_happen_with_probability_multiplier_times_p():
    P = _params(0.4, brightness=1, contrast=0.5, xflip=1)
    assert (P.brightness != 0).double().mean() == pytest.approx(0.4, abs=0.015)
    assert (P.contrast != 1).double().mean() == pytest.approx(0.2, abs=0.015)
    assert P.xflip.mean() == pytest.approx(0.2, abs=0.015)  # Active 40 %, of which half flip.


def test_color_distributions_rgb():
    P = _params(shape=(BIG, 3, 1, 8, 8), **AUGPIPE_SPECS['color'])
    assert P.brightness.std() == pytest.approx(0.2, rel=0.03) and P.brightness.mean() == pytest.approx(0, abs=0.005)
    assert P.contrast.log2().std() == pytest.approx(0.5, rel=0.03)
    assert P.lumaflip.mean() == pytest.approx(0.5, abs=0.015)
    assert P.hue.abs().max() <= math.pi and P.hue.std() == pytest.approx(math.pi / math.sqrt(3), rel=0.03)
    assert P.saturation.log2().std() == pytest.approx(1, rel=0.03)


@pytest.mark.parametrize('channels,sequences', [(1, False), (2, False), (4, False), (3, True), (1, True)])
def test_color_off_axes_for_grey_and_sequence_data(channels, sequences):
    P = _params(shape=(1000, channels, 1, 8, 8), channels_are_sequences=sequences, **AUGPIPE_SPECS['color'])
    assert (P.hue == 0).all() and (P.saturation == 1).all()
    assert (P.brightness != 0).all() and (P.contrast != 1).all()
    lumaflip_on = channels == 1 and not sequences
    assert bool((P.lumaflip != 0).any()) == lumaflip_on


def test_noise_and_cutout_distributions():
    P = _params(noise=1, cutout=1)
    assert P.noise.min() >= 0 and P.noise.mean() == pytest.approx(0.1 * math.sqrt(2 / math.pi), rel=0.02)
    assert P.noise.std() == pytest.approx(0.1 * math.sqrt(1 - 2 / math.pi), rel=0.03)  # Half-normal spread.
    assert (P.cutout_size == 0.5).all()
    assert P.cutout_center.min() >= 0 and P.cutout_center.max() <= 1
    assert P.cutout_center.mean() == pytest.approx(0.5, abs=0.01)


def test_imgfilter_gains_keep_the_expected_power():
    P = _params(imgfilter=1, imgfilter_bands=[0, 1, 0, 0])  # One band: a single renormalised gain step.
    power = torch.tensor(augment.IMGFILTER_EXPECTED_POWER)
    torch.testing.assert_close((power * P.imgfilter.square()).sum(dim=1), torch.ones(BIG), rtol=0, atol=1e-5)
    assert (P.imgfilter[:, 0] == P.imgfilter[:, 2]).all() and (P.imgfilter[:, 0] == P.imgfilter[:, 3]).all()
    assert (P.imgfilter[:, 1] / P.imgfilter[:, 0]).log2().std() == pytest.approx(1, rel=0.03)
    P = _params(imgfilter=1)
    assert (P.imgfilter != 1).all(dim=1).all()  # At p = 1 every band of every volume is touched.

def test_imgfilter_touches_each_band_with_probability_imgfilter_p_strength():
    P = _params(0.6, imgfilter=1, imgfilter_bands=[1, 0.5, 0, 1])
    # Untouched bands share one value (the product of the other bands' normalisations); band 2 never moves.
    touched = P.imgfilter != P.imgfilter[:, 2:3]
    torch.testing.assert_close(touched.double().mean(dim=0), torch.tensor([0.6, 0.3, 0, 0.6], dtype=torch.float64),
                               rtol=0, atol=0.015)
    both = (touched[:, 0] & touched[:, 3]).double().mean()
    assert both == pytest.approx(0.36, abs=0.015)  # Bands are drawn independently.

#----------------------------------------------------------------------------
# What the transforms do to images.


def _forced(pipe: AugmentPipe, x: torch.Tensor, **values) -> torch.Tensor:
    """Apply the pipe with chosen parameter values (the rest as drawn)."""
    params = pipe.sample_params(x.shape)
    for name, value in values.items():
        params[name] = torch.as_tensor(value, dtype=torch.float32).expand_as(params[name]).clone()
    return pipe.apply_params(x, params)


def test_integer_translation_moves_pixels():
    x = _blob(cx=16, cy=16)
    y = _forced(_pipe(xint=1), x, xint=[3.0, -2.0])
    ref = x.roll((-2, 3), dims=(3, 4))
    torch.testing.assert_close(y[..., 3:-3, 3:-3], ref[..., 3:-3, 3:-3], rtol=0, atol=1e-6)  # Edges: reflections.
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-3)


def test_xflip_and_rotate90_move_an_off_centre_blob():
    x = _blob(cx=12, cy=19)
    flipped = _centroid(_forced(_pipe(xflip=1), x, xflip=1.0))
    # The asymmetric sym6 filter delays by 0.4 px at 2x that a mirror doubles instead of cancelling: 0.4 px here.
    torch.testing.assert_close(flipped, torch.tensor([[20.0, 19.0]], dtype=torch.float64), rtol=0, atol=0.45)
    turned = _centroid(_forced(_pipe(rotate90=1), x, rotate90=1.0))
    # A quarter turn (x, y) -> (-y, x) about the centre (16, 16): (-4, 3) -> (-3, -4).
    torch.testing.assert_close(turned, torch.tensor([[13.0, 12.0]], dtype=torch.float64), rtol=0, atol=0.45)


def test_fractional_translation_moves_the_centroid_by_the_drawn_shift():
    x = _blob(N=8)
    pipe = _pipe(xfrac=1)
    torch.manual_seed(7)
    params = pipe.sample_params(x.shape)
    params.xfrac = params.xfrac.clamp(-4, 4)  # Stay clear of the borders.
    y = pipe.apply_params(x, params)
    torch.testing.assert_close(_centroid(y) - 16, params.xfrac.double(), rtol=0, atol=0.05)


@pytest.mark.parametrize('name', ['scale', 'rotate', 'aniso'])
def test_general_geometry_keeps_a_centred_blob_centred(name):
    x = _blob(sigma=2.5, N=16)
    pipe = _pipe(**{name: 1})
    torch.manual_seed(8)
    params = pipe.sample_params(x.shape)
    y = pipe.apply_params(x, params)
    assert (y - x).abs().max() > 0.01 or name == 'rotate'  # A round blob is rotation-invariant.
    # sym6 delays by 0.2 px per axis at 1x; a turn of the image by theta moves that delay by up to 2 * 0.2 * sqrt(2).
    assert (_centroid(y) - 16).norm(dim=1).max() < 0.6
    mass_ratio = y.sum(dim=(1, 2, 3, 4)) / x.sum(dim=(1, 2, 3, 4))
    torch.testing.assert_close(mass_ratio, params.scale.double() ** 2, rtol=0.02, atol=0)  # Area scales by s^2.


def test_grey_colour_is_gain_and_offset():
    torch.manual_seed(9)
    x = torch.randn(64, 1, 2, 8, 8, dtype=torch.float64)
    pipe = _pipe(brightness=1, contrast=1, lumaflip=1)
    params = pipe.sample_params(x.shape)
    y = pipe.apply_params(x, params)
    b, c, flip = (params[k].double().reshape(-1, 1, 1, 1, 1) for k in ('brightness', 'contrast', 'lumaflip'))
    torch.testing.assert_close(y, (1 - 2 * flip) * c * (x + b))


@pytest.mark.parametrize('channels,sequences', [(2, False), (4, False), (3, True)])
def test_multichannel_colour_is_one_gain_and_offset_per_volume(channels, sequences):
    torch.manual_seed(10)
    x = torch.randn(16, channels, 2, 8, 8, dtype=torch.float64)
    pipe = _pipe(channels_are_sequences=sequences, **AUGPIPE_SPECS['color'])
    params = pipe.sample_params(x.shape)
    b, c = (params[k].double().reshape(-1, 1, 1, 1, 1) for k in ('brightness', 'contrast'))
    torch.testing.assert_close(pipe.apply_params(x, params), c * (x + b))


def test_rgb_hue_keeps_luma_and_chroma_norm_and_saturation_scales_chroma():
    torch.manual_seed(11)
    x = torch.randn(8, 3, 2, 8, 8, dtype=torch.float64)
    luma = x.mean(dim=1, keepdim=True)
    y = _forced(_pipe(hue=1), x)
    torch.testing.assert_close(y.mean(dim=1, keepdim=True), luma)
    torch.testing.assert_close((y - y.mean(dim=1, keepdim=True)).norm(dim=1), (x - luma).norm(dim=1))
    assert (y - x).abs().max() > 0.1
    y = _forced(_pipe(saturation=1), x, saturation=0.25)
    torch.testing.assert_close(y, luma + 0.25 * (x - luma))
    y = _forced(_pipe(lumaflip=1), x, lumaflip=1.0)
    torch.testing.assert_close(y, x - 2 * luma)  # Householder reflection about the grey axis.


def test_imgfilter_bank_splits_the_spectrum():
    bank = imgfilter_bank()
    assert bank.shape == (4, 43)
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-15)  # Zero phase.
    np.testing.assert_allclose(bank.sum(axis=0), np.eye(43)[21], atol=1e-12)  # Unit gains: identity.
    np.testing.assert_allclose(bank.sum(axis=1), [1, 0, 0, 0], atol=1e-12)  # Only band 0 passes DC.
    nyquist = (bank * (-1.0) ** (np.arange(43) - 21)).sum(axis=1)  # Response at Nyquist, phase from the centre.
    np.testing.assert_allclose(nyquist, [0, 0, 0, 1], atol=1e-12)  # Only band 3 passes Nyquist.


def test_wavelets_are_orthonormal_with_vanishing_moments():
    for taps in (augment.SYM2, augment.SYM6):
        h = np.asarray(taps)
        n = h.size
        assert h.sum() == pytest.approx(math.sqrt(2), abs=1e-12)
        shifts = [np.dot(h[2 * k:], h[:n - 2 * k]) for k in range(n // 2)]
        np.testing.assert_allclose(shifts, np.eye(n // 2)[0], atol=1e-11)
        g = h[::-1] * (-1.0) ** np.arange(n)
        moments = [(g * np.arange(n, dtype=np.float64) ** m).sum() / n ** m for m in range(n // 2)]
        np.testing.assert_allclose(moments, 0, atol=1e-11)


def test_imgfilter_matches_a_separable_mirror_padded_convolution():
    torch.manual_seed(12)
    x = torch.randn(2, 2, 3, 30, 26, dtype=torch.float64)
    gains = torch.tensor([[1.5, 0.5, 2.0, 0.25], [0.7, 1.2, 0.3, 3.0]])
    y = _forced(_pipe(imgfilter=1), x, imgfilter=gains)
    taps = gains.double().numpy() @ imgfilter_bank()
    for n in range(2):
        # torch 'reflect' padding (edge not repeated) is scipy's 'mirror'.
        ref = scipy.ndimage.convolve1d(x[n].numpy(), taps[n], axis=-2, mode='mirror')
        ref = scipy.ndimage.convolve1d(ref, taps[n], axis=-1, mode='mirror')
        np.testing.assert_allclose(y[n].numpy(), ref, atol=1e-10)


def test_noise_has_the_drawn_sigma():
    x = torch.zeros(6, 1, 4, 64, 64)
    pipe = _pipe(noise=1)
    torch.manual_seed(13)
    params = pipe.sample_params(x.shape)
    y = pipe.apply_params(x, params)
    torch.testing.assert_close(y.std(dim=(1, 2, 3, 4)), params.noise, rtol=0.03, atol=0)


def test_cutout_zeroes_one_square_per_volume():
    x = torch.ones(BIG // 10, 1, 2, 32, 32)
    pipe = _pipe(cutout=1)
    centred = _forced(pipe, x[:4], cutout_center=0.5)
    assert (centred == 0).double().mean() == pytest.approx(0.25)  # 16 x 16 of 32 x 32, inside the slice.
    assert (centred[:, :, :, 8:24, 8:24] == 0).all()
    torch.manual_seed(14)
    params = pipe.sample_params(x.shape)
    zero = (pipe.apply_params(x, params) == 0).double().mean(dim=(1, 2, 3, 4))
    # A square of side 0.5 at centre c covers min(c + .25, 1) - max(c - .25, 0) of each axis (clipped at edges).
    c = params.cutout_center.double()
    cover = ((c + 0.25).clamp(max=1) - (c - 0.25).clamp(min=0)) * 32
    cover = (cover * 2).round() / 2  # Whole pixels: a pixel is cut when its centre is inside.
    assert zero.mean() == pytest.approx(0.4375 ** 2, rel=0.03)  # E[clipped side] = 0.4375 per axis.
    torch.testing.assert_close(zero, (cover[:, 0] * cover[:, 1] / 32 ** 2), rtol=0, atol=2 * 32 / 32 ** 2)

#----------------------------------------------------------------------------
# Gradients.


@pytest.mark.slow
@pytest.mark.parametrize('preset', ['geom', 'color'])
def test_gradients_float64(preset):
    pipe = _pipe(1, **AUGPIPE_SPECS[preset])

    def run(x):
        torch.manual_seed(15)  # The same draws on every call.
        return pipe(x)

    small = torch.randn(2, 1, 2, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (small,))
    assert torch.autograd.gradgradcheck(run, (small,))
    x = torch.randn(2, 1, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(run, (x,), fast_mode=True)
    assert torch.autograd.gradgradcheck(run, (x,), fast_mode=True)


def test_r1_style_double_backward_through_the_full_pipe():
    pipe = _pipe(1, **AUGPIPE_SPECS['bgcfnc'])
    x = torch.randn(2, 1, 2, 24, 24, dtype=torch.float64, requires_grad=True)

    def run(x):
        torch.manual_seed(16)
        return pipe(x)

    assert torch.autograd.gradgradcheck(run, (x,), fast_mode=True)


def test_torch_grid_sample_has_a_double_backward_wrt_input():
    # Why there is no grid_sample gradfix (see the module docstring): plain F.grid_sample passes in this torch.
    torch.manual_seed(17)
    x = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    grid = torch.rand(2, 4, 7, 2, dtype=torch.float64) * 2.4 - 1.2

    def sample(x):
        return F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)

    assert torch.autograd.gradcheck(sample, (x,))
    assert torch.autograd.gradgradcheck(sample, (x,))

#----------------------------------------------------------------------------
# ADA update.


def test_ada_update_follows_the_formula():
    p, target, batch, interval, kimg = 0.0, 0.6, 64, 4, 500
    step = batch * interval / (kimg * 1000)
    expected = 0.0
    for r_t in [0.9, 0.8, 0.7, 0.2, 0.65, 0.6, 0.1, 0.1, 0.1, 0.1]:
        p = update_ada_p(p, r_t, target, batch, interval, kimg)
        expected = max(0.0, expected + float(np.sign(r_t - target)) * step)
        assert p == pytest.approx(expected, abs=1e-15) and p >= 0
    assert p == 0  # Clamped below.
    assert update_ada_p(0.99, 1.0, 0.6, 1000, 4, 1) == pytest.approx(4.99)  # No upper clamp.
    assert update_ada_p(0.5, 0.6, 0.6, 64, 4, 500) == 0.5  # sign(0) = 0.


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match='batch_size'):
        update_ada_p(0.5, 0.7, 0.6, 0, 4, 500)
    with pytest.raises(ValueError, match='xflip'):
        AugmentPipe(xflip=-1)
    with pytest.raises(ValueError, match='imgfilter_bands'):
        AugmentPipe(imgfilter_bands=[1, 1])
    with pytest.raises(ValueError, match=r'\[N, C, D, H, W\]'):
        _pipe(xflip=1)(torch.zeros(2, 1, 8, 8))
    with pytest.raises(ValueError, match='imgfilter needs slices larger'):
        _pipe(imgfilter=1)(torch.zeros(1, 1, 2, 16, 16))

#----------------------------------------------------------------------------
# Preview CLI.


def _tiny_dataset(folder, channels: int = 1, count: int = 3) -> str:
    os.makedirs(folder)
    with open(os.path.join(folder, 'dataset.json'), 'w') as f:
        json.dump(dict(format='stylegan2-ada-3d/1', dtype='uint8', channels_are_sequences=channels == 2), f)
    rng = np.random.RandomState(0)
    for i in range(count):
        np.save(os.path.join(folder, f'vol{i}.npy'), rng.randint(0, 256, [channels, 4, 24, 20], dtype=np.uint8))
    return str(folder)


@pytest.mark.parametrize('channels', [1, 2])
def test_preview_cli_writes_originals_over_augmented(tmp_path, channels):
    data = _tiny_dataset(tmp_path / 'data', channels)
    out = tmp_path / 'grid.png'
    result = CliRunner().invoke(augment.main, ['--data', data, '--augpipe', 'bgc', '--p', '1', '--dest', str(out),
                                               '--num', '2', '--seed', '1'])
    assert result.exit_code == 0, result.output
    image = np.asarray(PIL.Image.open(out))
    # Two rows; sequences side by side in a cell; each 24 x 20 slice enlarged 11 times to reach 256 pixels.
    assert image.shape[:2] == (2 * 24 * 11, 2 * 20 * 11 * channels)
    original = np.load(os.path.join(data, 'vol0.npy'))[0, 2]  # Middle axial slice of the first channel.
    np.testing.assert_array_equal(image[:24 * 11:11, :20 * 11:11], original)
    assert np.abs(image[24 * 11::11, :20 * 11:11].astype(int) - original).mean() > 5
    assert sorted(os.listdir(tmp_path)) == ['data', 'grid.png']  # No temp file left behind.


def test_preview_cli_errors(tmp_path):
    data = _tiny_dataset(tmp_path / 'data')
    runner = CliRunner()
    result = runner.invoke(augment.main, ['--data', str(tmp_path / 'missing'), '--dest', str(tmp_path / 'a.png')])
    assert result.exit_code != 0 and '--data' in result.output
    result = runner.invoke(augment.main, ['--data', data, '--dest', str(tmp_path / 'a.jpg')])
    assert result.exit_code != 0 and '.png' in result.output
    result = runner.invoke(augment.main, ['--data', data, '--dest', str(tmp_path / 'a.png'), '--augpipe', 'nope'])
    assert result.exit_code != 0 and 'nope' in result.output
    assert not os.path.exists(tmp_path / 'a.png')


def _one_line_error(result) -> str:
    assert result.exit_code == 1 and result.exception is not None and isinstance(result.exception, SystemExit)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('Error: '), result.output
    return lines[0]


def test_preview_cli_reports_pipe_and_write_errors_in_one_line(tmp_path):
    data = _tiny_dataset(tmp_path / 'data')  # 24 x 20 slices: too small for imgfilter's 21-pixel reflection.
    runner = CliRunner()
    line = _one_line_error(runner.invoke(augment.main, ['--data', data, '--augpipe', 'bgcf', '--dest',
                                                        str(tmp_path / 'a.png')]))
    assert '--augpipe bgcf' in line and 'imgfilter needs slices larger than 21x21' in line
    os.makedirs(tmp_path / 'taken.png')  # A folder where the PNG should go: the final rename fails.
    line = _one_line_error(runner.invoke(augment.main, ['--data', data, '--dest', str(tmp_path / 'taken.png')]))
    assert 'taken.png' in line and 'cannot write' in line and 'Is a directory' in line
    assert sorted(os.listdir(tmp_path)) == ['data', 'taken.png'] and not os.listdir(tmp_path / 'taken.png')
