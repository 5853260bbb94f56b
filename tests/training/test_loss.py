# SPDX-License-Identifier: Apache-2.0
"""StyleGAN2Loss on toy networks: each phase's gradients against direct formulas."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from training.loss import StyleGAN2Loss

NUM_WS, W_DIM, SHAPE = 3, 4, (1, 2, 3, 4)  # img [N, C=1, D=2, H=3, W=4]


class ToyMapping(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(W_DIM, W_DIM, dtype=torch.float64))

    def forward(self, z, c, skip_w_avg_update=False):
        return (z @ self.weight)[:, None, :].repeat(1, NUM_WS, 1)  # [N, num_ws, w_dim]


class ToySynthesis(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(NUM_WS * W_DIM, int(np.prod(SHAPE)), dtype=torch.float64))

    def forward(self, ws):
        return torch.tanh(ws.flatten(1) @ self.weight).reshape(-1, *SHAPE)  # [N, C, D, H, W]


class ToyD(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(int(np.prod(SHAPE)), dtype=torch.float64) * 0.3)

    def forward(self, img, c):
        return (img.flatten(1) ** 2 @ self.weight)[:, None]  # Non-linear in img, so R1 has a real 2nd derivative.


def make_loss(**kwargs):
    torch.manual_seed(0)
    loss = StyleGAN2Loss(torch.device('cpu'), ToyMapping(), ToySynthesis(), ToyD(), **kwargs)
    for m in (loss.G_mapping, loss.G_synthesis, loss.D):
        m.requires_grad_(True)
    return loss


def grads(module):
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def test_dmain_gradient_matches_formula():
    loss = make_loss(style_mixing_prob=0, r1_gamma=0)
    real = torch.randn(3, *SHAPE, dtype=torch.float64)
    z = torch.randn(3, W_DIM, dtype=torch.float64)
    c = torch.zeros(3, 0, dtype=torch.float64)
    loss.accumulate_gradients('Dmain', real, c, z, c, gain=2.0)
    got = grads(loss.D)
    loss.D.zero_grad()
    fake = loss.G_synthesis(loss.G_mapping(z, c)).detach()
    expected = (F.softplus(loss.D(fake, c)).mean() + F.softplus(-loss.D(real, c)).mean()) * 2.0
    expected.backward()
    assert torch.allclose(got, grads(loss.D), rtol=1e-12, atol=1e-12)
    assert loss.G_synthesis.weight.grad is None  # Dmain must not train G.


def test_r1_gradient_matches_formula():
    gamma = 3.0
    loss = make_loss(r1_gamma=gamma)
    real = torch.randn(2, *SHAPE, dtype=torch.float64)
    c = torch.zeros(2, 0, dtype=torch.float64)
    loss.accumulate_gradients('Dreg', real, c, torch.randn(2, W_DIM, dtype=torch.float64), c, gain=16)
    got = grads(loss.D)
    loss.D.zero_grad()
    x = real.clone().requires_grad_(True)
    g, = torch.autograd.grad(loss.D(x, c).sum(), x, create_graph=True)
    (g.square().sum(dim=[1, 2, 3, 4]).mean() * gamma / 2 * 16).backward()
    assert torch.allclose(got, grads(loss.D), rtol=1e-12, atol=1e-12)


def test_gmain_nonsaturating_and_path_length_updates_mean():
    loss = make_loss(style_mixing_prob=0, pl_weight=2, pl_batch_shrink=2, pl_decay=0.5)
    z = torch.randn(4, W_DIM, dtype=torch.float64)
    c = torch.zeros(4, 0, dtype=torch.float64)
    loss.accumulate_gradients('Gmain', None, None, z, c, gain=1)
    got = grads(loss.G_synthesis)
    loss.G_synthesis.zero_grad()
    loss.G_mapping.zero_grad()
    F.softplus(-loss.D(loss.G_synthesis(loss.G_mapping(z, c)), c)).mean().backward()
    assert torch.allclose(got, grads(loss.G_synthesis), rtol=1e-12, atol=1e-12)
    assert loss.D.weight.grad is not None  # Gradients pass through D (its .grad is ignored by the G phase).

    assert float(loss.pl_mean) == 0
    loss.accumulate_gradients('Greg', None, None, z, c, gain=4)
    first = float(loss.pl_mean)
    assert first > 0  # pl_mean <- lerp(0, mean(pl_lengths), 0.5)
    loss.accumulate_gradients('Greg', None, None, z, c, gain=4)
    assert float(loss.pl_mean) != first


def test_style_mixing_changes_layers_after_cutoff():
    loss = make_loss(style_mixing_prob=1.0)
    z = torch.randn(2, W_DIM, dtype=torch.float64)
    _, ws = loss.run_G(z, torch.zeros(2, 0))
    plain = loss.G_mapping(z, None)
    same = (ws == plain).all(dim=2)[0]  # [num_ws]
    assert same[0] and not same.all()  # Layer 0 always keeps the first latent; the tail is mixed.
    first_mixed = int((~same).nonzero()[0])
    assert not same[first_mixed:].any()


def test_signs_real_reported_for_ada():
    collector = training_stats.Collector(regex='Loss/signs/real')
    loss = make_loss(r1_gamma=1)
    c = torch.zeros(2, 0, dtype=torch.float64)
    loss.accumulate_gradients('Dreg', torch.randn(2, *SHAPE, dtype=torch.float64), c,
                              torch.randn(2, W_DIM, dtype=torch.float64), c, gain=1)
    collector.update()
    assert collector.num('Loss/signs/real') == 2


def test_unknown_phase_is_an_error():
    with pytest.raises(ValueError, match='Unknown phase'):
        make_loss().accumulate_gradients('Gfoo', None, None, None, None, 1)
