# SPDX-License-Identifier: Apache-2.0
"""StyleGAN2 loss for volumes: non-saturating logistic loss, R1, path-length regularisation, style mixing.

Phases (as the official): Gmain, Greg, Gboth, Dmain, Dreg, Dboth. The "both" phases run the main loss and the
regulariser together when lazy regularisation is off. The path-length noise is scaled by 1/sqrt(D*H*W), the
volumetric analogue of 1/sqrt(H*W); R1 sums the squared input gradient over C, D, H and W.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import training_stats

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')


class StyleGAN2Loss:
    """Computes and back-propagates the losses of one phase for one batch_gpu chunk.

    Args:
        device: where the networks live.
        G_mapping, G_synthesis, D: the networks (possibly DDP-wrapped).
        augment_pipe: ADA pipe applied to every image D sees (reals and fakes), or None.
        style_mixing_prob: probability of mixing two latents at a random layer cutoff.
        r1_gamma: R1 weight gamma; the penalty is gamma/2 * |grad|^2.
        pl_batch_shrink: the path-length batch is batch_gpu // pl_batch_shrink.
        pl_decay: EMA decay of the path-length mean.
        pl_weight: path-length weight (0 disables it).
    """

    def __init__(self, device: torch.device, G_mapping, G_synthesis, D, augment_pipe=None,
                 style_mixing_prob: float = 0.9, r1_gamma: float = 10, pl_batch_shrink: int = 2,
                 pl_decay: float = 0.01, pl_weight: float = 2):
        self.device = device
        self.G_mapping = G_mapping
        self.G_synthesis = G_synthesis
        self.D = D
        self.augment_pipe = augment_pipe
        self.style_mixing_prob = style_mixing_prob
        self.r1_gamma = r1_gamma
        self.pl_batch_shrink = pl_batch_shrink
        self.pl_decay = pl_decay
        self.pl_weight = pl_weight
        self.pl_mean = torch.zeros([], device=device)

    def run_G(self, z: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ws = self.G_mapping(z, c)
        if self.style_mixing_prob > 0:
            # One cutoff for the whole batch, drawn on the device so no host sync is needed.
            num_ws = ws.shape[1]
            cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, num_ws)
            cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob,
                                 cutoff, torch.full_like(cutoff, num_ws))
            mixed = self.G_mapping(torch.randn_like(z), c, skip_w_avg_update=True)
            layer_idx = torch.arange(num_ws, device=ws.device)[None, :, None]  # [1, num_ws, 1]
            ws = torch.where(layer_idx < cutoff, ws, mixed)
        img = self.G_synthesis(ws)
        return img, ws

    def run_D(self, img: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.augment_pipe is not None:
            img = self.augment_pipe(img)
        return self.D(img, c)

    def accumulate_gradients(self, phase: str, real_img: torch.Tensor, real_c: torch.Tensor, gen_z: torch.Tensor,
                             gen_c: torch.Tensor, gain: float) -> None:
        """Back-propagate the loss of `phase` (scaled by `gain`) into the networks' .grad fields."""
        if phase not in PHASES:
            raise ValueError(f'Unknown phase "{phase}"; expected one of {PHASES}')
        do_Gmain = phase in ('Gmain', 'Gboth')
        do_Dmain = phase in ('Dmain', 'Dboth')
        do_Gpl = phase in ('Greg', 'Gboth') and self.pl_weight != 0
        do_Dr1 = phase in ('Dreg', 'Dboth') and self.r1_gamma != 0
        if do_Gmain:
            self._generator_main(gen_z, gen_c, gain)
        if do_Gpl:
            self._path_length(gen_z, gen_c, gain)
        loss_Dgen = self._discriminator_fake(gen_z, gen_c, gain) if do_Dmain else None
        if do_Dmain or do_Dr1:
            self._discriminator_real(real_img, real_c, gain, loss_Dgen, do_Dr1)

    def _generator_main(self, gen_z, gen_c, gain):
        with torch.autograd.profiler.record_function('Gmain_forward'):
            gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_G = F.softplus(-gen_logits)  # -log(sigmoid(gen_logits))
            training_stats.report('Loss/G/loss', loss_G)
        with torch.autograd.profiler.record_function('Gmain_backward'):
            loss_G.mean().mul(gain).backward()

    def _path_length(self, gen_z, gen_c, gain):
        with torch.autograd.profiler.record_function('Gpl_forward'):
            batch_size = max(gen_z.shape[0] // self.pl_batch_shrink, 1)
            gen_img, gen_ws = self.run_G(gen_z[:batch_size], gen_c[:batch_size])
            num_voxels = np.prod(gen_img.shape[2:])  # D * H * W
            pl_noise = torch.randn_like(gen_img) / np.sqrt(num_voxels)
            pl_grads, = torch.autograd.grad(outputs=[(gen_img * pl_noise).sum()], inputs=[gen_ws],
                                            create_graph=True, only_inputs=True)
            pl_lengths = pl_grads.square().sum(2).mean(1).sqrt()
            pl_mean = self.pl_mean.lerp(pl_lengths.mean().to(self.pl_mean.dtype), self.pl_decay)
            self.pl_mean.copy_(pl_mean.detach())
            pl_penalty = (pl_lengths - pl_mean).square()
            training_stats.report('Loss/pl_penalty', pl_penalty)
            loss_Gpl = pl_penalty * self.pl_weight
            training_stats.report('Loss/G/reg', loss_Gpl)
        with torch.autograd.profiler.record_function('Gpl_backward'):
            # The zero-weighted image term makes every parameter part of the graph, which DDP requires.
            (gen_img[:, 0, 0, 0, 0] * 0 + loss_Gpl).mean().mul(gain).backward()

    def _discriminator_fake(self, gen_z, gen_c, gain) -> torch.Tensor:
        with torch.autograd.profiler.record_function('Dgen_forward'):
            with torch.no_grad():
                gen_img, _ = self.run_G(gen_z, gen_c)
            gen_logits = self.run_D(gen_img, gen_c)
            training_stats.report('Loss/scores/fake', gen_logits)
            training_stats.report('Loss/signs/fake', gen_logits.sign())
            loss_Dgen = F.softplus(gen_logits)  # -log(1 - sigmoid(gen_logits))
        with torch.autograd.profiler.record_function('Dgen_backward'):
            loss_Dgen.mean().mul(gain).backward()
        return loss_Dgen.detach()

    def _discriminator_real(self, real_img, real_c, gain, loss_Dgen, do_Dr1):
        do_Dmain = loss_Dgen is not None
        name = 'Dreal_Dr1' if do_Dmain and do_Dr1 else 'Dreal' if do_Dmain else 'Dr1'
        with torch.autograd.profiler.record_function(name + '_forward'):
            real_img_tmp = real_img.detach().requires_grad_(do_Dr1)
            real_logits = self.run_D(real_img_tmp, real_c)
            training_stats.report('Loss/scores/real', real_logits)
            training_stats.report('Loss/signs/real', real_logits.sign())  # Feeds the ADA heuristic.
            loss_Dreal = 0
            if do_Dmain:
                loss_Dreal = F.softplus(-real_logits)  # -log(sigmoid(real_logits))
                training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal.detach())
            loss_Dr1 = 0
            if do_Dr1:
                r1_grads, = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[real_img_tmp],
                                                create_graph=True, only_inputs=True)
                r1_penalty = r1_grads.square().sum(dim=[1, 2, 3, 4])  # Sum over C, D, H, W.
                loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                training_stats.report('Loss/r1_penalty', r1_penalty)
                training_stats.report('Loss/D/reg', loss_Dr1)
        with torch.autograd.profiler.record_function(name + '_backward'):
            (real_logits * 0 + loss_Dreal + loss_Dr1).mean().mul(gain).backward()
