# SPDX-License-Identifier: Apache-2.0
"""Slice-wise adaptive discriminator augmentation (ADA) for volumes `[N, C, D, H, W]`.

Every transform of the official 2D pipe is applied to the axial slices of a volume, with its random parameters
drawn once per volume, so all D slices of a volume move, recolour, filter and get cut out together (the slice
axis itself is never resampled: D is often short and coarsely spaced). This is the same as reshaping to
`[N*D, C, H, W]` and repeating each volume's parameters D times; the code folds D into the channel axis
(`[N, C*D, H, W]`) instead, which gives the same numbers without copying parameters or transposing data.

Order of the stages, each applied per volume with probability (multiplier * p):
  1. geometry: xflip, rotate90, xint, scale, rotate, aniso, rotate, xfrac composed into one inverse 3x3 matrix,
     executed by reflect padding, 2x sym6 up-sampling, bilinear sampling and 2x sym6 down-sampling;
  2. colour: brightness, contrast, lumaflip, hue, saturation as one 4x4 matrix;
  3. imgfilter: random gains of 4 frequency bands built from the sym2 wavelet;
  4. noise (per-voxel Gaussian, per-volume sigma) and cutout (one square per volume, on every slice).
The colour matrix acts on RGB for 3-channel data. For 1-channel data it is averaged over its RGB rows (hue and
saturation are skipped). Channels that are separate MR sequences (`channels_are_sequences`), or any channel
count other than 1 and 3, get brightness and contrast only, one offset and gain per volume.

Second derivatives: R1 differentiates D's gradient through this pipe, so every op must support double backward
with respect to its input. The resampling goes through torch_utils/ops/grid_sample_gradfix.py, which uses
`F.grid_sample` where the installed torch can differentiate it twice (2.13 can) and a gather-based sampler where it
cannot (older releases raise "derivative for aten::grid_sampler_2d_backward is not implemented").

Also here: `update_ada_p` (the ADA heuristic) and a preview CLI:
    python -m training.augment --data DATASET.zip --augpipe bgc --p 0.5 --dest grid.png
"""

from __future__ import annotations

import math
import os
from typing import Sequence

import click
import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from dnnlib.cli import FiniteFloatRange
from torch_utils import persistence
from torch_utils.ops import grid_sample_gradfix, upfirdn3d
from training.presets import AUGPIPE_SPECS  # noqa: F401 (the --augpipe presets, named here as the official code)
from volumes.contract import to_unit

#----------------------------------------------------------------------------
# Wavelet low-pass (decomposition) filters, as published (Daubechies' symlets; PyWavelets' dec_lo order).

SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
SYM6 = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)

# Expected power of the 4 imgfilter bands (low to high) in natural images; the gains keep it on average.
IMGFILTER_EXPECTED_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)

#----------------------------------------------------------------------------
# The imgfilter bank: an octave split of the spectrum from the sym2 wavelet.


def _dilate(f: np.ndarray, factor: int) -> np.ndarray:
    """f(z) -> f(z^factor): insert factor - 1 zeros between taps."""
    out = np.zeros((f.size - 1) * factor + 1)
    out[::factor] = f
    return out


def _centre_pad(f: np.ndarray, size: int) -> np.ndarray:
    extra = (size - f.size) // 2
    return np.pad(f, [extra, extra])


def imgfilter_bank() -> np.ndarray:
    """Four zero-phase band filters of 43 taps, lowest band first, that sum to a unit impulse.

    With h the sym2 low-pass, lo = h(z) h(1/z) / 2 and hi = h(-z) h(-1/z) / 2 are zero-phase and complementary
    (lo + hi = 1, the orthogonality of the wavelet). Splitting the low band recursively with dilated copies gives
        band 3 = hi(z),  band 2 = lo(z) hi(z^2),  band 1 = lo(z) lo(z^2) hi(z^4),  band 0 = lo(z) lo(z^2) lo(z^4),
    whose sum telescopes to 1, so unit gains leave an image unchanged.

    Returns:
        float64 array [4, 43].
    """
    h = np.asarray(SYM2, dtype=np.float64)
    g = h * (-1.0) ** np.arange(h.size)  # h(-z): the quadrature-mirror high-pass.
    lo = np.convolve(h, h[::-1]) / 2
    hi = np.convolve(g, g[::-1]) / 2
    lo12 = np.convolve(lo, _dilate(lo, 2))
    bands = [np.convolve(lo12, _dilate(lo, 4)), np.convolve(lo12, _dilate(hi, 4)), np.convolve(lo, _dilate(hi, 2)),
             hi]
    size = bands[0].size
    return np.stack([_centre_pad(b, size) for b in bands])

#----------------------------------------------------------------------------
# Homogeneous matrices, batched over volumes: each helper returns [N, 3, 3] or [N, 4, 4] in float64.


def _matrix(rows: Sequence[Sequence], n: int, device: torch.device) -> torch.Tensor:
    """Stack rows of scalars and [N] tensors into [N, R, R]."""
    entries = [torch.as_tensor(v, dtype=torch.float64, device=device).expand(n) for row in rows for v in row]
    return torch.stack(entries, dim=1).reshape(n, len(rows), len(rows[0]))


def _translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], tx.shape[0], tx.device)


def _scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    return _matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], sx.shape[0], sx.device)


def _rotate2d(theta: torch.Tensor) -> torch.Tensor:
    c, s = torch.cos(theta), torch.sin(theta)
    return _matrix([[c, -s, 0], [s, c, 0], [0, 0, 1]], theta.shape[0], theta.device)


def _translate3d(t: torch.Tensor) -> torch.Tensor:
    return _matrix([[1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1]], t.shape[0], t.device)


def _scale3d(s: torch.Tensor) -> torch.Tensor:
    return _matrix([[s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1]], s.shape[0], s.device)


def _embed3x3(m: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] linear map -> [N, 4, 4] homogeneous matrix."""
    out = torch.eye(4, dtype=m.dtype, device=m.device).repeat(m.shape[0], 1, 1)
    out[:, :3, :3] = m
    return out


def _luma_projector(n: int, device: torch.device) -> torch.Tensor:
    """v v^T for the unit luma axis v = (1, 1, 1) / sqrt(3), as [N, 3, 3]."""
    return torch.full([n, 3, 3], 1 / 3, dtype=torch.float64, device=device)


def _rotate_about_luma(theta: torch.Tensor) -> torch.Tensor:
    """Rodrigues rotation by theta about the luma axis, [N, 3, 3]."""
    cross = torch.tensor([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=torch.float64,
                         device=theta.device) / math.sqrt(3)  # [v]_x, the cross-product matrix of v.
    eye = torch.eye(3, dtype=torch.float64, device=theta.device)
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    return c * eye + s * cross + (1 - c) * _luma_projector(theta.shape[0], theta.device)

#----------------------------------------------------------------------------
# The pipe.


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """ADA augmentation of volumes `[N, C, D, H, W]`, slice by slice with per-volume parameters.

    Each multiplier (0 = off, 1 = the preset strength) scales the probability `multiplier * p` with which a volume
    gets that transform; `p` is a buffer the training loop sets. Defaults of the spreads are the official ones.

    Args:
        xflip, rotate90, xint: pixel blitting: mirror in x, rotation by k * 90 degrees, integer translation.
        xint_max: largest integer translation, relative to the image size.
        scale, rotate, aniso, xfrac: general geometry: isotropic scale, rotation (applied twice, before and after
            aniso), anisotropic scale, fractional translation.
        scale_std, rotate_max, aniso_std, xfrac_std: log2 std of scale, largest rotation as a fraction of a full
            turn's half (1 = any angle), log2 std of aniso, std of xfrac relative to the image size.
        brightness, contrast, lumaflip, hue, saturation: colour transforms.
        brightness_std, contrast_std, hue_max, saturation_std: their spreads (contrast/saturation in log2).
        imgfilter: random amplification/attenuation of 4 frequency bands.
        imgfilter_bands: relative probability of touching each band, low to high.
        imgfilter_std: log2 std of a band's gain.
        noise, cutout: additive Gaussian noise and a zeroed square.
        noise_std: scale of the per-volume noise sigma (sigma = |N(0, 1)| * noise_std).
        cutout_size: side of the square relative to the slice size.
        channels_are_sequences: the channels are separate MR sequences, not RGB: colour is brightness/contrast only.
        label_channels: the last channels hold a label map (one-hot): they move with the geometric transforms and
            are left alone by colour, filtering, noise and cutout, which change intensities, not anatomy.
    """

    def __init__(self,
                 xflip: float = 0, rotate90: float = 0, xint: float = 0,  # Pixel blitting multipliers.
                 xint_max: float = 0.125,                                  # Max integer shift (fraction of size).
                 scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0,  # Geometry multipliers.
                 scale_std: float = 0.2,                                   # log2 std of isotropic scaling.
                 rotate_max: float = 1,                                    # Max rotation (1 = +-pi).
                 aniso_std: float = 0.2,                                   # log2 std of anisotropic scaling.
                 xfrac_std: float = 0.125,                                 # Std of fractional shift (of size).
                 brightness: float = 0, contrast: float = 0, lumaflip: float = 0,  # Colour multipliers.
                 hue: float = 0, saturation: float = 0,
                 brightness_std: float = 0.2,                              # Std of the brightness offset.
                 contrast_std: float = 0.5,                                # log2 std of the contrast gain.
                 hue_max: float = 1,                                       # Max hue rotation (1 = +-pi).
                 saturation_std: float = 1,                                # log2 std of the saturation gain.
                 imgfilter: float = 0,                                     # Filtering multiplier.
                 imgfilter_bands: Sequence[float] = (1, 1, 1, 1),          # Per-band probability weights.
                 imgfilter_std: float = 1,                                 # log2 std of a band gain.
                 noise: float = 0, cutout: float = 0,                      # Corruption multipliers.
                 noise_std: float = 0.1,                                   # Scale of the noise sigma.
                 cutout_size: float = 0.5,                                 # Cutout side (fraction of size).
                 channels_are_sequences: bool = False,                     # Channels are MR sequences, not RGB.
                 label_channels: int = 0,                                  # Last channels: a one-hot label map.
                 ) -> None:
        super().__init__()
        multipliers = dict(xflip=xflip, rotate90=rotate90, xint=xint, scale=scale, rotate=rotate, aniso=aniso,
                           xfrac=xfrac, brightness=brightness, contrast=contrast, lumaflip=lumaflip, hue=hue,
                           saturation=saturation, imgfilter=imgfilter, noise=noise, cutout=cutout)
        for name, value in multipliers.items():
            if not value >= 0:
                raise ValueError(f'AugmentPipe: {name} must be a multiplier >= 0, got {value!r}')
        if len(imgfilter_bands) != 4 or any(not b >= 0 for b in imgfilter_bands):
            raise ValueError(f'AugmentPipe: imgfilter_bands must be 4 weights >= 0, got {imgfilter_bands!r}')
        self.mult = dnnlib.EasyDict({k: float(v) for k, v in multipliers.items()})
        self.xint_max, self.scale_std, self.rotate_max = float(xint_max), float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        self.imgfilter_bands, self.imgfilter_std = [float(b) for b in imgfilter_bands], float(imgfilter_std)
        self.noise_std, self.cutout_size = float(noise_std), float(cutout_size)
        self.channels_are_sequences = bool(channels_are_sequences)
        self.label_channels = int(label_channels)

        self.register_buffer('p', torch.ones([]))  # Overall probability; the training loop copies its value in.
        self.register_buffer('Hz_geom', upfirdn3d.setup_filter(list(SYM6)))  # [12], normalised to sum 1.
        self.register_buffer('Hz_fbank', torch.as_tensor(imgfilter_bank(), dtype=torch.float32))  # [4, 43]

    def color_mode(self, num_channels: int) -> str:
        """'rgb' (full 4x4 colour matrix), 'luma' (1 channel: rows averaged) or 'gain' (brightness/contrast)."""
        if self.channels_are_sequences or num_channels not in (1, 3):
            return 'gain'
        return 'rgb' if num_channels == 3 else 'luma'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augment a batch of volumes [N, C, D, H, W]; returns the same shape and dtype."""
        return self.apply_params(x, self.sample_params(x.shape, x.device))

    #------------------------------------------------------------------
    # Parameters.

    def _draw(self, prob: torch.Tensor | None, value: torch.Tensor, identity: float) -> torch.Tensor:
        """Per volume: `value` with probability `prob`, else the transform's `identity` value (prob None: off)."""
        if prob is None:
            return torch.full_like(value, identity)
        active = torch.rand([value.shape[0]], device=value.device) < prob
        active = active.reshape([-1] + [1] * (value.ndim - 1))
        return torch.where(active, value, torch.full_like(value, identity))

    def _prob(self, name: str, p: torch.Tensor, enabled: bool = True) -> torch.Tensor | None:
        """multiplier * p for transform `name`, or None when it is off."""
        return self.mult[name] * p if enabled and self.mult[name] > 0 else None

    def sample_params(self, shape: Sequence[int], device: torch.device | str | None = None) -> dnnlib.EasyDict:
        """Draw every transform's parameters once per volume (identity values where a transform is not applied).

        Args:
            shape: the batch shape [N, C, D, H, W].
            device: where to draw; default: the device of the buffer `p`.

        Returns:
            EasyDict of float32 tensors, all [N] unless noted: xflip (0/1), rotate90 (quarter turns 0..3), xint
            ([N, 2] whole pixels x, y), scale, rotate_pre / rotate_post (radians), aniso, xfrac ([N, 2] pixels),
            brightness (offset), contrast (gain), lumaflip (0/1), hue (radians), saturation (gain), imgfilter
            ([N, 4] band gains), noise (sigma), cutout_size (fraction of the slice side, 0 = off),
            cutout_center ([N, 2] fractions x, y).
        """
        if len(shape) != 5:
            raise ValueError(f'AugmentPipe expects volumes [N, C, D, H, W], got shape {list(shape)}')
        N, C, _D, H, W = (int(s) for s in shape)
        C -= self.label_channels  # The image channels.
        device = torch.device(device) if device is not None else self.p.device
        p = self.p.to(device)
        P = dnnlib.EasyDict()
        self._sample_geometry(P, p, N, H, W)
        self._sample_color(P, p, N, self.color_mode(C))
        self._sample_imgfilter(P, p, N)
        P.noise = self._draw(self._prob('noise', p), torch.randn([N], device=device).abs() * self.noise_std, 0)
        P.cutout_size = self._draw(self._prob('cutout', p), torch.full([N], self.cutout_size, device=device), 0)
        P.cutout_center = torch.rand([N, 2], device=device)
        return P

    def _sample_geometry(self, P: dnnlib.EasyDict, p: torch.Tensor, N: int, H: int, W: int) -> None:
        device = p.device

        def uniform(*shape):  # U(-1, 1)
            return torch.rand(shape, device=device) * 2 - 1

        def log2_normal(std):  # 2^N(0, std^2)
            return torch.exp2(torch.randn([N], device=device) * std)

        size = torch.tensor([W, H], dtype=torch.float32, device=device)
        P.xflip = self._draw(self._prob('xflip', p), torch.randint(0, 2, [N], device=device).float(), 0)
        P.rotate90 = self._draw(self._prob('rotate90', p), torch.randint(0, 4, [N], device=device).float(), 0)
        P.xint = self._draw(self._prob('xint', p), torch.round(uniform(N, 2) * self.xint_max * size), 0)
        P.scale = self._draw(self._prob('scale', p), log2_normal(self.scale_std), 1)
        # Two rotations, each with p_rot, so that P(at least one) = rotate * p.
        p_rot = 1 - torch.sqrt(1 - torch.clamp(self._prob('rotate', p), 0, 1)) if self.mult.rotate > 0 else None
        P.rotate_pre = self._draw(p_rot, uniform(N) * math.pi * self.rotate_max, 0)
        P.aniso = self._draw(self._prob('aniso', p), log2_normal(self.aniso_std), 1)
        P.rotate_post = self._draw(p_rot, uniform(N) * math.pi * self.rotate_max, 0)
        P.xfrac = self._draw(self._prob('xfrac', p), torch.randn([N, 2], device=device) * self.xfrac_std * size, 0)

    def _sample_color(self, P: dnnlib.EasyDict, p: torch.Tensor, N: int, mode: str) -> None:
        device = p.device
        normal = torch.randn([N, 4], device=device)
        P.brightness = self._draw(self._prob('brightness', p), normal[:, 0] * self.brightness_std, 0)
        P.contrast = self._draw(self._prob('contrast', p), torch.exp2(normal[:, 1] * self.contrast_std), 1)
        P.lumaflip = self._draw(self._prob('lumaflip', p, mode != 'gain'),
                                torch.randint(0, 2, [N], device=device).float(), 0)
        P.hue = self._draw(self._prob('hue', p, mode == 'rgb'),
                           (torch.rand([N], device=device) * 2 - 1) * math.pi * self.hue_max, 0)
        P.saturation = self._draw(self._prob('saturation', p, mode == 'rgb'),
                                  torch.exp2(normal[:, 2] * self.saturation_std), 1)

    def _sample_imgfilter(self, P: dnnlib.EasyDict, p: torch.Tensor, N: int) -> None:
        device = p.device
        P.imgfilter = torch.ones([N, 4], device=device)
        if self._prob('imgfilter', p) is None:
            return
        expected_power = torch.tensor(IMGFILTER_EXPECTED_POWER, device=device)
        for band, strength in enumerate(self.imgfilter_bands):
            if strength == 0:
                continue
            gain = self._draw(self._prob('imgfilter', p) * strength,
                              torch.exp2(torch.randn([N], device=device) * self.imgfilter_std), 1)
            t = torch.ones([N, 4], device=device)
            t[:, band] = gain
            norm = (expected_power * t.square()).sum(dim=1, keepdim=True).sqrt()  # Keep the expected power...
            t = t / torch.where(gain[:, None] == 1, torch.ones_like(norm), norm)  # ...and untouched volumes exact.
            P.imgfilter = P.imgfilter * t

    #------------------------------------------------------------------
    # Application.

    def apply_params(self, x: torch.Tensor, params: dnnlib.EasyDict) -> torch.Tensor:
        """Apply drawn parameters (from sample_params) to volumes [N, C, D, H, W]. Only noise draws more numbers."""
        if x.ndim != 5 or not x.is_floating_point():
            raise ValueError(f'AugmentPipe expects floating-point volumes [N, C, D, H, W], got '
                             f'{x.dtype} {list(x.shape)}')
        G_inv = self.geometric_matrix(params, x.shape[3], x.shape[4])
        if not torch.equal(G_inv, torch.eye(3, dtype=G_inv.dtype, device=G_inv.device).expand_as(G_inv)):
            x = self._apply_geometry(x, G_inv)
        if self.label_channels:
            labels = x[:, x.shape[1] - self.label_channels:]
            return torch.cat([self._apply_intensity(x[:, :x.shape[1] - self.label_channels], params), labels], dim=1)
        return self._apply_intensity(x, params)

    def _apply_intensity(self, x: torch.Tensor, params: dnnlib.EasyDict) -> torch.Tensor:
        """Colour, filtering, noise and cutout: the transforms of values, not of geometry."""
        C_mat = self.color_matrix(params)
        if not torch.equal(C_mat, torch.eye(4, dtype=C_mat.dtype, device=C_mat.device).expand_as(C_mat)):
            x = self._apply_color(x, C_mat)
        if bool((params.imgfilter != 1).any()):
            x = self._apply_imgfilter(x, params.imgfilter)
        if bool((params.noise != 0).any()):
            x = x + torch.randn_like(x) * params.noise.to(x.dtype).reshape(-1, 1, 1, 1, 1)
        if bool((params.cutout_size != 0).any()):
            x = x * self.cutout_mask(params, x.shape[3], x.shape[4]).to(x.dtype)
        return x

    def geometric_matrix(self, params: dnnlib.EasyDict, H: int, W: int) -> torch.Tensor:
        """The inverse geometric transform [N, 3, 3] (float64): output pixel -> input pixel.

        Coordinates are in pixels from the slice centre, x to the right, y down (row index). Each transform's
        inverse is multiplied on the right, so the transforms act on the image in the order listed (xflip first).
        """
        P = params
        G = torch.eye(3, dtype=torch.float64, device=P.scale.device).repeat(P.scale.shape[0], 1, 1)
        one = torch.ones_like(P.scale, dtype=torch.float64)
        G = G @ _scale2d(1 - 2 * P.xflip.double(), one)  # A mirror is its own inverse.
        G = G @ _rotate2d(-math.pi / 2 * P.rotate90.double())
        G = G @ _translate2d(-P.xint[:, 0].double(), -P.xint[:, 1].double())
        G = G @ _scale2d(1 / P.scale.double(), 1 / P.scale.double())
        G = G @ _rotate2d(-P.rotate_pre.double())
        G = G @ _scale2d(1 / P.aniso.double(), P.aniso.double())
        G = G @ _rotate2d(-P.rotate_post.double())
        G = G @ _translate2d(-P.xfrac[:, 0].double(), -P.xfrac[:, 1].double())
        return G

    def _apply_geometry(self, x: torch.Tensor, G_inv: torch.Tensor) -> torch.Tensor:
        """Resample every slice with its volume's G_inv: pad, 2x up-sample, bilinear sample, 2x down-sample."""
        N, C, D, H, W = x.shape
        hz = self.Hz_geom.numel() // 4  # Support of the sym6 filter at the original resolution, in pixels.
        margin = self._geometry_margin(G_inv, H, W, hz)
        slices = x.reshape(N, C * D, H, W)  # Every slice of a volume shares its transform.
        slices = F.pad(slices, [margin[0], margin[2], margin[1], margin[3]], mode='reflect')
        slices = upfirdn3d.upsample3d(slices.unsqueeze(2), self.Hz_geom, up=[2, 2, 1]).squeeze(2)  # [N, CD, 2H', 2W']

        # Map normalised output coordinates (the slice plus an hz border) to normalised padded-input coordinates.
        Hp, Wp = H + margin[1] + margin[3], W + margin[0] + margin[2]
        ones = torch.ones([N], dtype=torch.float64, device=x.device)
        theta = _scale2d(2 / Wp * ones, 2 / Hp * ones)
        theta = theta @ _translate2d((margin[0] - margin[2]) / 2 * ones, (margin[1] - margin[3]) / 2 * ones)
        theta = theta @ G_inv @ _scale2d((W + 2 * hz) / 2 * ones, (H + 2 * hz) / 2 * ones)
        out_size = [N, C * D, 2 * (H + 2 * hz), 2 * (W + 2 * hz)]
        grid = F.affine_grid(theta[:, :2, :].to(x.dtype), out_size, align_corners=False)
        slices = grid_sample_gradfix.grid_sample(slices, grid)

        # The flipped filter undoes the up-sampler's phase; the negative padding crops the border away.
        slices = upfirdn3d.downsample3d(slices.unsqueeze(2), self.Hz_geom, down=[2, 2, 1],
                                        padding=[-2 * hz, -2 * hz, -2 * hz, -2 * hz, 0, 0], flip_filter=True)
        return slices.reshape(N, C, D, H, W)  # [N, C*D, 1, H, W] -> [N, C, D, H, W]

    @staticmethod
    def _geometry_margin(G_inv: torch.Tensor, H: int, W: int, hz: int) -> list[int]:
        """Reflect padding [x0, y0, x1, y1] that covers every sampled position plus the up-sampler's support."""
        cx, cy = W / 2 + hz, H / 2 + hz  # Corners of the output slice with its hz border.
        corners = torch.tensor([[-cx, cx, cx, -cx], [-cy, -cy, cy, cy], [1, 1, 1, 1]], dtype=G_inv.dtype,
                               device=G_inv.device)  # [3, 4]
        src = (G_inv @ corners)[:, :2, :]  # [N, 2, 4]
        half = torch.tensor([W / 2, H / 2], dtype=G_inv.dtype, device=G_inv.device)
        lo, hi = src.amin(dim=(0, 2)), src.amax(dim=(0, 2))
        margin = torch.cat([-half - lo, hi - half]).ceil() + hz
        limit = torch.tensor([W - 1, H - 1, W - 1, H - 1], dtype=G_inv.dtype, device=G_inv.device)
        margin = torch.minimum(margin.clamp(min=0), limit)  # Reflect padding must stay below the size.
        return [int(m) for m in margin.tolist()]

    def color_matrix(self, params: dnnlib.EasyDict) -> torch.Tensor:
        """The colour transform [N, 4, 4] (float64) acting on homogeneous RGB, transforms in the order applied."""
        P = params
        N, device = P.brightness.shape[0], P.brightness.device
        C_mat = _translate3d(P.brightness.double())
        C_mat = _scale3d(P.contrast.double()) @ C_mat
        vvT = _luma_projector(N, device)
        eye = torch.eye(3, dtype=torch.float64, device=device)
        C_mat = _embed3x3(eye - 2 * vvT * P.lumaflip.double()[:, None, None]) @ C_mat  # Householder about luma.
        C_mat = _embed3x3(_rotate_about_luma(P.hue.double())) @ C_mat
        # vv^T + (I - vv^T) s, written so that s = 1 gives exactly I.
        C_mat = _embed3x3(eye + (eye - vvT) * (P.saturation.double()[:, None, None] - 1)) @ C_mat
        return C_mat

    def _apply_color(self, x: torch.Tensor, C_mat: torch.Tensor) -> torch.Tensor:
        N, C = x.shape[:2]
        C_mat = C_mat.to(x.dtype)
        flat = x.reshape(N, C, -1)  # [N, C, D*H*W]
        if self.color_mode(C) == 'rgb':
            flat = C_mat[:, :3, :3] @ flat + C_mat[:, :3, 3:]
        else:
            rows = C_mat[:, :3, :].mean(dim=1)  # [N, 4]: one grey row for every channel.
            flat = flat * rows[:, :3].sum(dim=1).reshape(N, 1, 1) + rows[:, 3].reshape(N, 1, 1)
        return flat.reshape(x.shape)

    def _apply_imgfilter(self, x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Filter every slice with its volume's band mix, separably (y then x), after reflect padding."""
        N, C, D, H, W = x.shape
        taps = self.Hz_fbank.shape[1]
        pad = taps // 2
        if H <= pad or W <= pad:
            raise ValueError(f'AugmentPipe imgfilter needs slices larger than {pad}x{pad} pixels (reflect padding), '
                             f'got H={H}, W={W}')
        filters = (gains.to(x.dtype) @ self.Hz_fbank.to(x.dtype)).repeat_interleave(C * D, dim=0)  # [N*C*D, taps]
        slices = F.pad(x.reshape(1, N * C * D, H, W), [pad, pad, pad, pad], mode='reflect')
        slices = F.conv2d(slices, filters.reshape(N * C * D, 1, taps, 1), groups=N * C * D)
        slices = F.conv2d(slices, filters.reshape(N * C * D, 1, 1, taps), groups=N * C * D)
        return slices.reshape(N, C, D, H, W)

    @staticmethod
    def cutout_mask(params: dnnlib.EasyDict, H: int, W: int) -> torch.Tensor:
        """[N, 1, 1, H, W] of 0 inside each volume's square, 1 outside (the same square on every slice)."""
        size, centre = params.cutout_size, params.cutout_center
        xs = (torch.arange(W, device=size.device, dtype=torch.float32) + 0.5) / W
        ys = (torch.arange(H, device=size.device, dtype=torch.float32) + 0.5) / H
        outside_x = (xs[None, :] - centre[:, 0:1]).abs() >= size[:, None] / 2  # [N, W]
        outside_y = (ys[None, :] - centre[:, 1:2]).abs() >= size[:, None] / 2  # [N, H]
        keep = outside_x[:, None, :] | outside_y[:, :, None]  # [N, H, W]
        return keep[:, None, None].float()

#----------------------------------------------------------------------------
# The ADA heuristic.


def update_ada_p(p: float, signs_real_mean: float, target: float, batch_size: int, interval: int,
                 ada_kimg: float) -> float:
    """One ADA step: move p by sign(r_t - target) * batch_size * interval / (ada_kimg * 1000), never below 0.

    Args:
        p: current augment probability.
        signs_real_mean: r_t, the mean of sign(D(real)) since the last step.
        target: the r_t that ADA aims for (0.6 by default).
        batch_size: images per iteration, all GPUs together.
        interval: iterations between steps.
        ada_kimg: thousands of real images over which p can move by 1.

    Returns:
        The new p. There is no upper clamp: p above 1 saturates in the `rand < multiplier * p` tests.
    """
    if batch_size <= 0 or interval <= 0 or not ada_kimg > 0:
        raise ValueError(f'update_ada_p: batch_size, interval and ada_kimg must be > 0, got {batch_size}, '
                         f'{interval}, {ada_kimg}')
    if not math.isfinite(signs_real_mean):
        raise ValueError(f'update_ada_p: signs_real_mean must be finite, got {signs_real_mean}')
    step = np.sign(signs_real_mean - target) * batch_size * interval / (ada_kimg * 1000)
    return max(0.0, float(p + step))

#----------------------------------------------------------------------------
# Preview CLI.


@click.command(cls=dnnlib.cli.Command, renamed={'--out': '--dest'})
@click.option('--data', required=True, metavar='PATH', type=dnnlib.cli.PATH,
              help='Dataset zip or folder made by dataset_tool.py')
@click.option('--augpipe', type=click.Choice(sorted(AUGPIPE_SPECS)), default='bgc', show_default=True,
              help='Augmentation preset')
@click.option('--p', 'prob', type=FiniteFloatRange(min=0, max=1), default=0.5, show_default=True,
              help='Augment probability')
@dnnlib.cli.dest_option('Output PNG')
@click.option('--num', type=click.IntRange(min=1), default=8, show_default=True, help='Volumes to show')
@click.option('--seed', type=int, default=0, show_default=True, help='Random seed of the augmentation')
def main(data: str, augpipe: str, prob: float, dest: str, num: int, seed: int) -> None:
    """Preview an augmentation preset: middle axial slices, originals on top, augmented below.

    \b
    Example:
        python -m training.augment --data prostate.zip --augpipe bgc --p 0.5 --dest grid.png
    """
    from volumes.packed import PackedDataset
    from training.visualize import PREVIEW_SIZE, volume_grid

    if not dest.lower().endswith('.png'):
        raise click.BadParameter(f'"{dest}": expected a path ending in .png', param_hint='--dest')
    if not os.path.isdir(os.path.dirname(os.path.abspath(dest))):
        raise click.BadParameter(f'"{dest}": its folder does not exist', param_hint='--dest')
    try:
        dataset = PackedDataset(data)
    except (ValueError, OSError) as e:
        raise click.ClickException(f'--data: {e}' if data in str(e) else f'--data {data}: {e}') from None
    num = min(num, len(dataset))
    volumes = np.stack([dataset.volume(i) for i in range(num)])  # [N, C, D, H, W] in the stored dtype.
    x = torch.from_numpy(to_unit(volumes, dataset.volume_info.max_value))  # [N, C, D, H, W] in [-1, 1]

    pipe = AugmentPipe(**AUGPIPE_SPECS[augpipe], channels_are_sequences=dataset.channels_are_sequences)
    pipe.p.fill_(prob)
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            y = pipe(x)
    except ValueError as e:  # E.g. slices too small for imgfilter's reflect padding.
        raise click.ClickException(f'--augpipe {augpipe} on {data}: {e}') from None
    grid = volume_grid(torch.cat([x, y]).numpy(), grid_size=(num, 2), drange=(-1, 1),
                       spacing=dataset.volume_info.spacing, min_size=PREVIEW_SIZE)
    try:
        dnnlib.util.atomic_write(dest, lambda f: grid.save(f, format='PNG'))
    except OSError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f'Wrote {dest}: {num} volumes from {data}, augpipe {augpipe}, p {prob}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
