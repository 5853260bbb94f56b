# SPDX-License-Identifier: Apache-2.0
"""StyleGAN2 generator and discriminator for volumes [N, C, D, H, W].

The networks follow the official 2D StyleGAN2-ADA architecture with every 2D operation replaced by its 3D
counterpart (the layers are in training/layers.py): equalised-lr 3D convolutions (weight [O, I, k, k, k]),
modulated conv3d with demodulation over I * k^3, noise buffers [D, H, W], and per-block, per-axis up/down-sampling taken from the anisotropic schedule of
`training.volume_shape.make_schedule` (the discriminator mirrors the generator's schedule exactly).

Per-axis resampling factors are given in x, y, z order (W, H, D), as the ops in `torch_utils.ops` take them.

Mixed precision: the top `num_fp16_res` blocks (never the base block) compute in float16 (precision 'fp16', use
conv_clamp against overflow) or bfloat16 ('bf16'), in channels_last_3d memory format when channels_last=True.
The image/skip path of G, the mapping networks and the D epilogue stay in full precision (float32; the parameters'
dtype, so a .double() network runs in float64 for gradient checks); `force_fp32=True` disables reduced precision.
On a non-CUDA device every block computes in full precision (as the official code does for non-CUDA devices),
since reduced-precision convolutions on CPU are slow and gain nothing.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import bias_act, upfirdn3d
from training.layers import (DEFAULT_FILTER, Conv3dLayer, FullyConnectedLayer, check_options, compute_dtype,
                             init_weight, modulated_conv3d, normalize_2nd_moment, setup_filter)
from volumes.contract import VolumeInfo, as_xyz, divide_shape
from training.volume_shape import make_schedule

#----------------------------------------------------------------------------
# Mapping network.


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and label c) -> w, broadcast to [N, num_ws, w_dim], with a tracked w_avg for truncation.

    Args:
        z_dim: latent size (0: none, as in D's label mapping).
        c_dim: label size (0: unconditional).
        w_dim: output size.
        num_ws: number of ws to broadcast to; None returns [N, w_dim].
        num_layers: fully connected layers.
        embed_features: label embedding size (None: w_dim).
        layer_features: hidden layer size (None: w_dim).
        activation: activation of the hidden layers.
        lr_multiplier: learning-rate multiplier of the hidden layers.
        w_avg_beta: decay of the running average of w (None: no w_avg, no truncation).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 embed_features: int | None = None, layer_features: int | None = None, activation: str = 'lrelu',
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        if z_dim <= 0 and c_dim <= 0:
            raise ValueError('MappingNetwork needs z_dim > 0 or c_dim > 0')
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        if w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, skip_w_avg_update: bool = False) -> torch.Tensor:
        """Map z [N, z_dim] and c [N, c_dim] to ws [N, num_ws, w_dim] (or [N, w_dim] when num_ws is None).

        w_avg moves only in training mode and without skip_w_avg_update. Truncation pulls the first
        `truncation_cutoff` ws (all when None) towards w_avg: w_avg + psi * (w - w_avg).
        """
        x = None
        dtype = self.fc0.weight.dtype  # float32 (float64 in gradient checks), never reduced precision.
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            x = normalize_2nd_moment(z.to(dtype))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            y = normalize_2nd_moment(self.embed(c.to(dtype)))
            x = torch.cat([x, y], dim=1) if x is not None else y
        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError('truncation needs a MappingNetwork with w_avg_beta (a tracked w_avg)')
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            if self.num_ws is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = torch.cat([self.w_avg.lerp(x[:, :cutoff], truncation_psi), x[:, cutoff:]], dim=1)
        return x

#----------------------------------------------------------------------------
# Synthesis network.


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3x3 convolution (optionally up-sampling), per-voxel noise, bias and activation.

    Args:
        in_channels, out_channels: channel counts.
        w_dim: size of w.
        shape: output (D, H, W).
        kernel_size: k.
        up: per-axis up-sampling (int or x, y, z).
        use_noise: add noise [D, H, W] scaled by a learned strength (init 0).
        activation: a bias_act activation name.
        resample_filter: 1D FIR filter for the up-sampled axes.
        conv_clamp: clamp of the output (None: none).
        channels_last: store the weight in channels_last_3d format.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, shape: Sequence[int], kernel_size: int = 3,
                 up: int | Sequence[int] = 1, use_noise: bool = True, activation: str = 'lrelu',
                 resample_filter: Sequence[float] = DEFAULT_FILTER, conv_clamp: float | None = None,
                 channels_last: bool = False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.shape = tuple(int(s) for s in shape)
        self.up = as_xyz(up, 'up')
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(init_weight(out_channels, in_channels, kernel_size, channels_last))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        if use_noise:
            self.register_buffer('noise_const', torch.randn(self.shape))  # [D, H, W]
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = 'random', fused_modconv: bool = True,
                gain: float = 1) -> torch.Tensor:
        if noise_mode not in ('random', 'const', 'none'):
            raise ValueError(f'noise_mode: expected "random", "const" or "none", got {noise_mode!r}')
        misc.assert_shape(x, [None, self.in_channels, *divide_shape(self.shape, self.up)])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, *self.shape], device=x.device) * self.noise_strength
        elif self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        x = modulated_conv3d(x=x, weight=self.weight, styles=styles, noise=noise, up=list(self.up),
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=max(self.up) == 1, fused_modconv=fused_modconv)
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain,
                                 clamp=act_clamp)


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated (not demodulated) 1x1x1 convolution from features to image channels.

    Args:
        in_channels, out_channels: feature and image channels.
        w_dim: size of w.
        kernel_size: k.
        conv_clamp: clamp of the output (None: none).
        channels_last: store the weight in channels_last_3d format.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: float | None = None, channels_last: bool = False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(init_weight(out_channels, in_channels, kernel_size, channels_last))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * kernel_size ** 3)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv3d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One generator block: (learned constant | up-sampling conv0), conv1, and ToRGB on the image path.

    Args:
        in_channels: input channels (0 for the first block, which starts from a learned constant).
        out_channels: output channels.
        w_dim: size of w.
        shape: output (D, H, W) of the block.
        up: per-axis up-sampling factors (x, y, z); (1, 1, 1) for the first block.
        img_channels: image channels.
        is_last: whether this is the last block (always has a ToRGB).
        architecture: 'orig', 'skip' or 'resnet'.
        resample_filter: 1D FIR filter for the up-sampled axes.
        conv_clamp: clamp of every conv output (None: none).
        use_fp16, precision, fp16_channels_last: reduced precision ('fp16' or 'bf16', on CUDA) and memory format.
        **layer_kwargs: passed to both SynthesisLayers.
    """

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, shape: Sequence[int],
                 up: int | Sequence[int], img_channels: int, is_last: bool, architecture: str = 'skip',
                 resample_filter: Sequence[float] = DEFAULT_FILTER, conv_clamp: float | None = None,
                 use_fp16: bool = False, precision: str = 'fp16', fp16_channels_last: bool = False,
                 **layer_kwargs):
        super().__init__()
        check_options(architecture, precision)
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.shape = tuple(int(s) for s in shape)
        self.up = as_xyz(up, 'up')
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.precision = precision
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        common = dict(w_dim=w_dim, shape=self.shape, resample_filter=resample_filter, conv_clamp=conv_clamp,
                      channels_last=self.channels_last, **layer_kwargs)
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, *self.shape]))  # [C, bD, bH, bW]
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=self.up, **common)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **common)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv3dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=self.up,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, force_fp32: bool = False,
                fused_modconv: bool | None = None, **layer_kwargs) -> tuple[torch.Tensor, torch.Tensor | None]:
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        full_dtype = self.conv1.weight.dtype
        dtype = compute_dtype(self.use_fp16, self.precision, force_fp32, ws.device, full_dtype)
        memory_format = torch.channels_last_3d if self.channels_last and dtype != full_dtype \
            else torch.contiguous_format
        if fused_modconv is None:
            # On the CPU the grouped convolution is as fast and keeps no modulated copy of the activations for
            # backward (docs/performance.md); on the GPU training keeps the non-fused path.
            fused_modconv = ws.device.type == 'cpu' or \
                ((not self.training) and (dtype == full_dtype or int(ws.shape[0]) == 1))
        in_shape = divide_shape(self.shape, self.up)

        # Main path.
        if self.in_channels == 0:
            x = self.const.to(dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1, 1])  # [N, C, bD, bH, bW]
            x = x.contiguous(memory_format=memory_format)
        else:
            misc.assert_shape(x, [None, self.in_channels, *in_shape])
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y + x
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        # Image path, always in full precision.
        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, *in_shape])
            img = upfirdn3d.upsample3d(img, self.resample_filter, up=list(self.up))
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=full_dtype, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> volume [N, img_channels, D, H, W], grown along the volume_shape schedule.

    Args:
        w_dim: size of w.
        img_shape: output (D, H, W).
        img_channels: image channels.
        channel_base, channel_max: channels of a block = min(channel_base // max(H, W), channel_max).
        num_fp16_res: number of top blocks (never the base block) computed in reduced precision.
        precision: 'fp16' or 'bf16' for those blocks.
        base: learned constant size (bD, bH, bW); None: automatic (training.volume_shape).
        depth_schedule: 'early' or 'late' (see training.volume_shape).
        channels_last: channels_last_3d memory format in the reduced-precision blocks.
        **block_kwargs: passed to every SynthesisBlock (architecture, conv_clamp, resample_filter, ...).
    """

    def __init__(self, w_dim: int, img_shape: Sequence[int], img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, precision: str = 'fp16',
                 base: Sequence[int] | None = None, depth_schedule: str = 'early', channels_last: bool = False,
                 **block_kwargs):
        super().__init__()
        check_options(None, precision)
        schedule = make_schedule(img_shape, base=base, depth_schedule=depth_schedule, channel_base=channel_base,
                                 channel_max=channel_max)
        self.w_dim = w_dim
        self.img_shape = schedule.img_shape
        self.img_channels = img_channels
        self.block_shapes = schedule.block_shapes
        self.num_blocks = schedule.num_blocks
        fp16_start = max(schedule.num_blocks + 1 - num_fp16_res, 1)

        self.num_ws = 0
        for idx in range(schedule.num_blocks + 1):
            in_channels = schedule.block_channels[idx - 1] if idx > 0 else 0
            is_last = idx == schedule.num_blocks
            block = SynthesisBlock(in_channels, schedule.block_channels[idx], w_dim=w_dim,
                                   shape=schedule.block_shapes[idx], up=schedule.block_up[idx],
                                   img_channels=img_channels, is_last=is_last, use_fp16=idx >= fp16_start,
                                   precision=precision, fp16_channels_last=channels_last, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f'b{idx}', block)

    def forward(self, ws: torch.Tensor, noise_mode: str = 'random', force_fp32: bool = False,
                fused_modconv: bool | None = None, **block_kwargs) -> torch.Tensor:
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(self.b0.const.dtype)
        # A block's ToRGB shares its w with the next block's first conv.
        block_ws = []
        w_idx = 0
        for idx in range(self.num_blocks + 1):
            block = getattr(self, f'b{idx}')
            block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
            w_idx += block.num_conv

        x = img = None
        for idx, cur_ws in enumerate(block_ws):
            x, img = getattr(self, f'b{idx}')(x, img, cur_ws, force_fp32=force_fp32, fused_modconv=fused_modconv,
                                              noise_mode=noise_mode, **block_kwargs)
        return img


@persistence.persistent_class
class Generator(torch.nn.Module):
    """Mapping network followed by the synthesis network.

    Args:
        z_dim: latent size.
        c_dim: label size (0: unconditional).
        w_dim: intermediate latent size.
        img_shape: output (D, H, W).
        img_channels: image channels.
        mapping_kwargs: MappingNetwork options (num_layers, lr_multiplier, ...).
        synthesis_kwargs: SynthesisNetwork options (channel_base, architecture, num_fp16_res, ...).
        volume_info: the training data's volume record (volumes.contract.VolumeInfo.to_dict(): spacing, direction,
            centre, intensity mapping, channel names), kept so that every snapshot and safe export can write its
            volumes in place without the dataset; None: unknown (generated files then say what they assume).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, img_shape: Sequence[int], img_channels: int,
                 mapping_kwargs: dict | None = None, synthesis_kwargs: dict | None = None,
                 volume_info: dict | None = None):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_channels = img_channels
        self.volume_info = VolumeInfo.from_dict(volume_info) if volume_info is not None else None
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_shape=img_shape, img_channels=img_channels,
                                          **(synthesis_kwargs or {}))
        self.img_shape = self.synthesis.img_shape
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws,
                                      **(mapping_kwargs or {}))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1,
                truncation_cutoff: int | None = None, **synthesis_kwargs) -> torch.Tensor:
        """z [N, z_dim], c [N, c_dim] -> volume [N, img_channels, D, H, W] (float32, not clamped)."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)

#----------------------------------------------------------------------------
# Discriminator.


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One discriminator block: (fromrgb), conv0, conv1 with per-axis down-sampling, optional resnet skip.

    Args:
        in_channels: input feature channels (0 for the first block, which reads the image).
        tmp_channels: channels of conv0.
        out_channels: output channels.
        shape: input (D, H, W).
        down: per-axis down-sampling factors (x, y, z).
        img_channels: image channels.
        first_layer_idx: global index of this block's first layer, counted from the input side.
        architecture: 'orig', 'skip' or 'resnet'.
        activation: a bias_act activation name.
        resample_filter: 1D FIR filter for the down-sampled axes.
        conv_clamp: clamp of every conv output (None: none).
        use_fp16, precision, fp16_channels_last: reduced precision ('fp16' or 'bf16', on CUDA) and memory format.
        freeze_layers: layers with a global index below this hold buffers instead of parameters (Freeze-D).
    """

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, shape: Sequence[int],
                 down: int | Sequence[int], img_channels: int, first_layer_idx: int, architecture: str = 'resnet',
                 activation: str = 'lrelu', resample_filter: Sequence[float] = DEFAULT_FILTER,
                 conv_clamp: float | None = None, use_fp16: bool = False, precision: str = 'fp16',
                 fp16_channels_last: bool = False, freeze_layers: int = 0):
        super().__init__()
        check_options(architecture, precision)
        self.in_channels = in_channels
        self.shape = tuple(int(s) for s in shape)
        self.down = as_xyz(down, 'down')
        self.img_channels = img_channels
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.precision = precision
        self.channels_last = use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', setup_filter(resample_filter))
        self.num_layers = 0

        def trainable() -> bool:
            # Layers are numbered globally from the input side; the first freeze_layers are frozen.
            self.num_layers += 1
            return first_layer_idx + self.num_layers - 1 >= freeze_layers

        common = dict(conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv3dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=trainable(), **common)
        self.conv0 = Conv3dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=trainable(), **common)
        self.conv1 = Conv3dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=self.down,
                                 resample_filter=resample_filter, trainable=trainable(), **common)
        if architecture == 'resnet':
            self.skip = Conv3dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=self.down,
                                    resample_filter=resample_filter, trainable=trainable(),
                                    channels_last=self.channels_last)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None,
                force_fp32: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        device = (x if x is not None else img).device
        full_dtype = self.conv0.weight.dtype
        dtype = compute_dtype(self.use_fp16, self.precision, force_fp32, device, full_dtype)
        memory_format = torch.channels_last_3d if self.channels_last and dtype != full_dtype \
            else torch.contiguous_format

        # Input: features from the previous block and/or the image.
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, *self.shape])
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, *self.shape])
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn3d.downsample3d(img, self.resample_filter, down=list(self.down)) \
                if self.architecture == 'skip' else None

        # Main layers.
        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y + x
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Append the standard deviation over groups of samples, averaged over C, D, H, W, as extra channels.

    Args:
        group_size: samples per group (min(group_size, N) is used; N must be divisible by it); None: whole batch.
        num_channels: number of appended channels (the features are split into that many groups).
    """

    def __init__(self, group_size: int | None, num_channels: int = 1):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, d, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g != 0 or c % f != 0:
            raise ValueError(f'MinibatchStdLayer: batch {n} must be divisible by the group size {g} and channels '
                             f'{c} by num_channels {f}')
        y = x.reshape(g, -1, f, c // f, d, h, w)  # [G, n/G, F, C/F, D, H, W]; sample i is in group i % (n/G).
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()  # [n/G, F, C/F, D, H, W]
        y = y.mean(dim=[2, 3, 4, 5])  # [n/G, F]
        y = y.reshape(-1, f, 1, 1, 1).repeat(g, 1, d, h, w)  # [N, F, D, H, W]
        return torch.cat([x, y], dim=1)


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The last D stage at the base shape, always float32: mbstd, conv 3^3, FC, output FC (with projection).

    Args:
        in_channels: feature channels C.
        cmap_dim: size of the label projection (0: unconditional, output [N, 1]).
        shape: base (D, H, W).
        img_channels: image channels.
        architecture: 'orig', 'skip' or 'resnet' ('skip' reads the image through fromrgb here too).
        mbstd_group_size: MinibatchStdLayer group size.
        mbstd_num_channels: MinibatchStdLayer channels (0: no mbstd).
        activation: a bias_act activation name.
        conv_clamp: clamp of the conv output (None: none).
    """

    def __init__(self, in_channels: int, cmap_dim: int, shape: Sequence[int], img_channels: int,
                 architecture: str = 'resnet', mbstd_group_size: int | None = 4, mbstd_num_channels: int = 1,
                 activation: str = 'lrelu', conv_clamp: float | None = None):
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.shape = tuple(int(s) for s in shape)
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == 'skip':
            self.fromrgb = Conv3dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv3dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * int(np.prod(self.shape)), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, cmap: torch.Tensor | None,
                force_fp32: bool = False) -> torch.Tensor:
        del force_fp32  # Always in full precision.
        dtype = self.conv.weight.dtype
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, *self.shape])
            x = x.to(dtype=dtype, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, *self.shape])
            y = self.fromrgb(img.to(dtype=dtype, memory_format=torch.contiguous_format))
            x = x + y if x is not None else y

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))  # [N, C * bD * bH * bW] -> [N, C]
        x = self.out(x)
        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim])
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """Volume [N, img_channels, D, H, W] (and label c) -> logit [N, 1]; mirrors the generator's schedule.

    Args:
        c_dim: label size (0: unconditional).
        img_shape: input (D, H, W).
        img_channels: image channels.
        architecture: 'resnet' (default), 'skip' or 'orig'.
        channel_base, channel_max: channels of a block, as the generator.
        num_fp16_res: number of blocks nearest the input computed in reduced precision.
        conv_clamp: clamp of every conv output (None: none).
        cmap_dim: size of the label projection (None: channels of the base block).
        precision: 'fp16' or 'bf16'.
        base, depth_schedule: as the generator (the same make_schedule call).
        channels_last: channels_last_3d memory format in the reduced-precision blocks.
        block_kwargs: DiscriminatorBlock options (freeze_layers, activation, ...).
        mapping_kwargs: options of the label MappingNetwork.
        epilogue_kwargs: DiscriminatorEpilogue options (mbstd_group_size, ...).
    """

    def __init__(self, c_dim: int, img_shape: Sequence[int], img_channels: int, architecture: str = 'resnet',
                 channel_base: int = 32768, channel_max: int = 512, num_fp16_res: int = 0,
                 conv_clamp: float | None = None, cmap_dim: int | None = None, precision: str = 'fp16',
                 base: Sequence[int] | None = None, depth_schedule: str = 'early', channels_last: bool = False,
                 block_kwargs: dict | None = None, mapping_kwargs: dict | None = None,
                 epilogue_kwargs: dict | None = None):
        super().__init__()
        check_options(None, precision)
        schedule = make_schedule(img_shape, base=base, depth_schedule=depth_schedule, channel_base=channel_base,
                                 channel_max=channel_max)
        self.c_dim = c_dim
        self.img_shape = schedule.img_shape
        self.img_channels = img_channels
        self.num_blocks = schedule.num_blocks
        channels = schedule.block_channels
        if cmap_dim is None:
            cmap_dim = channels[0]
        if c_dim == 0:
            cmap_dim = 0
        fp16_start = max(schedule.num_blocks + 1 - num_fp16_res, 1)

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for idx in range(schedule.num_blocks, 0, -1):
            in_channels = channels[idx] if idx < schedule.num_blocks else 0
            block = DiscriminatorBlock(in_channels, channels[idx], channels[idx - 1], shape=schedule.block_shapes[idx],
                                       down=schedule.block_up[idx], first_layer_idx=cur_layer_idx,
                                       use_fp16=idx >= fp16_start, precision=precision,
                                       fp16_channels_last=channels_last, **(block_kwargs or {}), **common)
            setattr(self, f'b{idx}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **(mapping_kwargs or {}))
        # Without any block (a volume of the base size), the epilogue itself has to read the image.
        if schedule.num_blocks == 0:
            common['architecture'] = 'skip'
        self.b0 = DiscriminatorEpilogue(channels[0], cmap_dim=cmap_dim, shape=schedule.base_shape,
                                        **(epilogue_kwargs or {}), **common)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, **block_kwargs) -> torch.Tensor:
        """img [N, img_channels, D, H, W], c [N, c_dim] -> logits [N, 1]."""
        misc.assert_shape(img, [None, self.img_channels, *self.img_shape])
        x = None
        for idx in range(self.num_blocks, 0, -1):
            x, img = getattr(self, f'b{idx}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b0(x, img, cmap, **block_kwargs)

