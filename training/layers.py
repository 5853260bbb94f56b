# SPDX-License-Identifier: Apache-2.0
"""Building blocks of the 3D networks: equalised-learning-rate layers and the modulated 3D convolution.

Per-axis resampling factors are given in x, y, z order (W, H, D), as the ops in `torch_utils.ops` take them.
Mixed-precision helpers (`compute_dtype`, `REDUCED_DTYPES`) live here too; training/networks.py builds the
generator and discriminator from these pieces.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv3d_resample, fma, upfirdn3d
from volumes.contract import as_xyz, divide_shape

DEFAULT_FILTER = (1, 3, 3, 1)
REDUCED_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}

#----------------------------------------------------------------------------
# Helpers.


def compute_dtype(use_reduced: bool, precision: str, force_fp32: bool, device: torch.device,
                   full_dtype: torch.dtype = torch.float32) -> torch.dtype:
    """The dtype a block computes in: reduced precision only on CUDA, else `full_dtype` (the parameters' dtype:
    float32, or float64 after .double() for gradient checks)."""
    if use_reduced and not force_fp32 and device.type == 'cuda':
        return REDUCED_DTYPES[precision]
    return full_dtype


def setup_filter(f: Sequence[float]) -> torch.Tensor:
    # On torch's current default device, so a network can be built under `with torch.device('meta')`.
    return upfirdn3d.setup_filter(list(f), device=torch.empty([]).device)


def init_weight(out_channels: int, in_channels: int, kernel_size: int, channels_last: bool) -> torch.Tensor:
    weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size, kernel_size])  # [O, I, k, k, k]
    return weight.contiguous(memory_format=torch.channels_last_3d if channels_last else torch.contiguous_format)


def check_options(architecture: str | None, precision: str) -> None:
    if architecture is not None and architecture not in ('orig', 'skip', 'resnet'):
        raise ValueError(f'architecture: expected "orig", "skip" or "resnet", got {architecture!r}')
    if precision not in REDUCED_DTYPES:
        raise ValueError(f'precision: expected one of {sorted(REDUCED_DTYPES)}, got {precision!r}')


@misc.profiled_function
def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x to unit mean square along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()

#----------------------------------------------------------------------------
# Modulated convolution.


@misc.profiled_function
def modulated_conv3d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, noise: torch.Tensor | None = None,
                     up: int | Sequence[int] = 1, down: int | Sequence[int] = 1, padding: int = 0,
                     resample_filter: torch.Tensor | None = None, demodulate: bool = True, flip_weight: bool = True,
                     fused_modconv: bool = True) -> torch.Tensor:
    """Convolve each sample with the shared weight scaled by its styles, optionally demodulated.

    Args:
        x: input [N, I, D, H, W].
        weight: shared weight [O, I, k, k, k].
        styles: per-sample input-channel scales [N, I].
        noise: None or a tensor broadcastable to the output [N, O, D', H', W'], added after demodulation.
        up, down: per-axis resampling factors (int or x, y, z).
        padding: padding of the convolution.
        resample_filter: FIR filter for the resampling (see upfirdn3d.setup_filter).
        demodulate: normalise each output channel's per-sample weight to unit norm over I * k^3.
        flip_weight: passed to conv3d_resample (False = true convolution, used with up-sampling).
        fused_modconv: True runs one grouped convolution with per-sample weights; False scales the activations,
            runs one shared-weight convolution and demodulates afterwards (cheaper in training). Both give the
            same result.

    Returns:
        The output [N, O, D', H', W'] in x's dtype.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kd, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kd, kh, kw])  # [OIkkk]
    misc.assert_shape(x, [batch_size, in_channels, None, None, None])  # [NIDHW]
    misc.assert_shape(styles, [batch_size, in_channels])  # [NI]

    # Pre-normalise so the fp16 products below cannot overflow; demodulation removes the scale again.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kd * kh * kw) /
                           weight.norm(float('inf'), dim=[1, 2, 3, 4], keepdim=True))  # max_Ikkk
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)  # max_I

    # Per-sample weights and demodulation coefficients.
    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1, 1)  # [NOIkkk]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4, 5]) + 1e-8).rsqrt()  # [NO]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1, 1)  # [NOIkkk]

    # Non-fused: modulate the activations instead of the weight, so one shared-weight conv serves the batch.
    # (Also for an up-sampling layer on the CPU: torch runs a grouped transposed convolution group by group.)
    if not fused_modconv or (x.device.type == 'cpu' and batch_size > 1 and max(np.atleast_1d(up)) > 1):
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1, 1)
        x = conv3d_resample.conv3d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                            padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            return fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1, 1), noise.to(x.dtype))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1, 1)
        if noise is not None:
            return x + noise.to(x.dtype)
        return x

    # Fused: fold the batch into the channels and run one grouped conv with groups = N.
    x = x.reshape(1, -1, *x.shape[2:])  # [1, N*I, D, H, W]
    w = w.reshape(-1, in_channels, kd, kh, kw)  # [N*O, I, k, k, k]
    x = conv3d_resample.conv3d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                                        groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])  # [N, O, D', H', W']
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x

#----------------------------------------------------------------------------
# Equalised-learning-rate layers.


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Linear layer with equalised learning rate: weights are stored unit-variance and scaled at runtime.

    Args:
        in_features, out_features: sizes.
        bias: whether to add a bias.
        activation: a bias_act activation name.
        lr_multiplier: learning-rate multiplier (stored weight = randn / lr_multiplier).
        bias_init: initial bias value.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = 'linear',
                 lr_multiplier: float = 1, bias_init: float = 0):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)


@persistence.persistent_class
class Conv3dLayer(torch.nn.Module):
    """3D convolution with equalised learning rate, optional per-axis FIR resampling, bias and activation.

    Args:
        in_channels, out_channels: channel counts.
        kernel_size: k (weight [O, I, k, k, k], runtime gain 1 / sqrt(I * k^3)).
        bias: whether to add a bias.
        activation: a bias_act activation name.
        up, down: per-axis resampling factors (int or x, y, z).
        resample_filter: 1D FIR filter used on the resampled axes.
        conv_clamp: clamp the output to [-conv_clamp, conv_clamp] (times the call's gain); None: no clamping.
        channels_last: store the weight in channels_last_3d format.
        trainable: False registers weight and bias as buffers (Freeze-D).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = 'linear', up: int | Sequence[int] = 1, down: int | Sequence[int] = 1,
                 resample_filter: Sequence[float] = DEFAULT_FILTER, conv_clamp: float | None = None,
                 channels_last: bool = False, trainable: bool = True):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = as_xyz(up, 'up')
        self.down = as_xyz(down, 'down')
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 3)
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        weight = init_weight(out_channels, in_channels, kernel_size, channels_last)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv3d_resample.conv3d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=list(self.up),
                                            down=list(self.down), padding=self.padding,
                                            flip_weight=max(self.up) == 1)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=act_clamp)

#----------------------------------------------------------------------------
# The names this module had before 2026-12-03. Snapshot pickles carry the source of training/networks.py as it was
# when they were written, and that source imports these names from here: keep them, or older snapshots stop loading.

_DEFAULT_FILTER = DEFAULT_FILTER
_REDUCED_DTYPES = REDUCED_DTYPES
_compute_dtype = compute_dtype
_setup_filter = setup_filter
_init_weight = init_weight
_check_options = check_options
_xyz = as_xyz
_divide_shape = divide_shape
