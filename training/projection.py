# SPDX-License-Identifier: Apache-2.0
"""Projection of a real volume into a generator's W space and noise inputs (used by projector.py).

The loss is 3D-StyleGAN's: mean squared error at full resolution plus at a 2x down-sampled resolution, and the
official noise regularisation (squared autocorrelation of every noise buffer at each level of a pyramid), with
the official learning-rate ramps and latent noise schedule.
"""

from __future__ import annotations

import copy

import click
import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from training.generation import noise_buffers
from volumes.contract import dhw_to_xyz, to_unit
from volumes import packing, volume_io


def noise_regularisation(noise_bufs: list[torch.Tensor]) -> torch.Tensor:
    """Squared autocorrelation at lag 1 along each axis, summed over a pyramid of each [D, H, W] buffer."""
    reg = torch.zeros([], device=noise_bufs[0].device)
    for noise in noise_bufs:
        noise = noise[None, None]  # [1, 1, D, H, W]
        while True:
            for dim in (2, 3, 4):
                if noise.shape[dim] > 1:
                    reg = reg + (noise * torch.roll(noise, shifts=1, dims=dim)).mean() ** 2
            if max(noise.shape[3:]) <= 8:
                break
            kernel = [2 if size >= 2 else 1 for size in noise.shape[2:]]
            noise = F.avg_pool3d(noise, kernel_size=kernel)
    return reg


def downsample(volume: torch.Tensor) -> torch.Tensor:
    """2x average pooling on every axis that has at least 2 voxels."""
    return F.avg_pool3d(volume, kernel_size=[2 if s >= 2 else 1 for s in volume.shape[2:]])


def project(G, target: torch.Tensor, c: torch.Tensor | None = None, num_steps: int = 1000, w_avg_samples: int = 10000,
            initial_learning_rate: float = 0.1, initial_noise_factor: float = 0.05, lr_rampdown_length: float = 0.25,
            lr_rampup_length: float = 0.05, noise_ramp_length: float = 0.75, regularize_noise_weight: float = 1e5,
            seed: int = 303, device: torch.device = torch.device('cpu'), verbose: bool = False):
    """Optimise one w (shared by all layers) and the noise buffers so that G reproduces `target` [C, D, H, W].

    c is the label [1, c_dim] of a conditional network (None: unconditional); it sets the mean w the search
    starts from. Returns (w [num_ws, w_dim], the optimised noise buffers by name, the MSE at every step).
    """
    if tuple(target.shape) != (G.img_channels, *G.img_shape):
        raise ValueError(f'target has shape {tuple(target.shape)}; the network makes '
                         f'{(G.img_channels, *G.img_shape)}')
    G = copy.deepcopy(G).eval().requires_grad_(False).to(device)
    target = target[None].to(device, torch.float32)  # [1, C, D, H, W]

    # Mean and spread of W, the starting point and the scale of the latent noise.
    z = torch.from_numpy(np.random.RandomState(seed).randn(w_avg_samples, G.z_dim)).float().to(device)
    c = torch.zeros([1, G.c_dim]) if c is None else c
    w_samples = G.mapping(z, c.to(device).repeat(w_avg_samples, 1))[:, :1, :]  # [S, 1, w_dim]
    w_avg = w_samples.mean(0, keepdim=True)
    w_std = float((w_samples - w_avg).square().sum() / w_avg_samples) ** 0.5

    named_noise = noise_buffers(G)
    noise_bufs = list(named_noise.values())
    w_opt = w_avg.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt] + noise_bufs, betas=(0.9, 0.999), lr=initial_learning_rate)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for buf in noise_bufs:
            buf.copy_(torch.randn(buf.shape, generator=generator, device=device))
            buf.requires_grad = True

    losses = []
    for step in range(num_steps):
        t = step / num_steps
        w_noise_scale = w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2
        lr_ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
        lr_ramp = 0.5 - 0.5 * np.cos(lr_ramp * np.pi)
        lr_ramp = lr_ramp * min(1.0, t / lr_rampup_length)
        for group in optimizer.param_groups:
            group['lr'] = initial_learning_rate * lr_ramp

        ws = (w_opt + torch.randn(w_opt.shape, generator=generator, device=device) * w_noise_scale)
        synth = G.synthesis(ws.repeat(1, G.num_ws, 1), noise_mode='const')
        mse = F.mse_loss(synth, target)
        loss = mse + F.mse_loss(downsample(synth), downsample(target)) + \
            noise_regularisation(noise_bufs) * regularize_noise_weight
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(mse.detach()))
        if verbose and (step % 100 == 0 or step == num_steps - 1):
            print(f'step {step + 1:>4d}/{num_steps}: mse {losses[-1]:<8.5f} loss {float(loss.detach()):<8.5f}')
        with torch.no_grad():  # Keep the noise at zero mean and unit variance, as the official does.
            for buf in noise_bufs:
                buf -= buf.mean()
                buf *= buf.square().mean().rsqrt()
    noises = {name: buf.detach().requires_grad_(False) for name, buf in named_noise.items()}
    return w_opt.detach()[0].repeat(G.num_ws, 1), noises, losses


def load_target(path: str, G) -> torch.Tensor:
    """A volume file as [C, D, H, W] in [-1, 1] at the network's shape, packed as its training data was: the
    packer's pipeline (volumes/packing.py) with the generator's volume record (spacing, orient, interpolator,
    intensity mapping), around the volume's own centre. A .npy file has no geometry: it is only resized."""
    info = G.volume_info
    try:
        channels = packing.split_channels(volume_io.read_any(path, allow_channels=True))
        if len(channels) != G.img_channels:
            raise ValueError(f'{path} has {len(channels)} channels; the network makes {G.img_channels}')
        names = [path] * len(channels)
        if volume_io.volume_extension(path) == '.npy':
            stored = np.stack([info.intensity.to_stored(volume_io.image_to_array(c), name)
                               for c, name in zip(channels, names)])
            volume = torch.from_numpy(to_unit(stored, info.max_value))  # [C, D, H, W]
            if tuple(volume.shape[1:]) != tuple(G.img_shape):
                volume = F.interpolate(volume[None], size=tuple(G.img_shape), mode='trilinear', align_corners=False)[0]
            return volume
        options = packing.GridOptions(size=dhw_to_xyz(G.img_shape), spacing=info.spacing, orient=info.orient,
                                      interpolation=info.interpolation)
        stored = packing.pack_images(channels, options, info.intensity, names).volume
    except (OSError, ValueError, RuntimeError) as e:
        raise click.BadParameter(dnnlib.util.one_line(e, 240), param_hint='--target') from None  # Names the file.
    return torch.from_numpy(to_unit(stored, info.max_value))


def save_projection(path: str, w: torch.Tensor, noises: dict[str, torch.Tensor]) -> None:
    """projected_w.npz: key "w" [1, num_ws, w_dim] and the optimised noise as "noise/NAME" (for generate.py)."""
    arrays = {'w': w[None].cpu().numpy()}
    arrays.update({f'noise/{name}': noise.cpu().numpy() for name, noise in noises.items()})
    try:
        dnnlib.util.atomic_write(path, lambda f: np.savez(f, **arrays))
    except OSError as e:
        raise click.ClickException(dnnlib.util.write_error_message(path, e)) from None
