# SPDX-License-Identifier: Apache-2.0
"""3D generator and discriminator: shapes on the worked volume sizes, the modulated convolution against a direct
formula, mixed precision, truncation, noise, w_avg, gradients and double backward, persistence, Freeze-D."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import misc
from training import layers, networks
from volumes.contract import VolumeInfo, parse_size
from training.volume_shape import make_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = dict(channel_base=256, channel_max=32)


def make_G(size: str, c_dim: int = 0, img_channels: int = 1, mapping=None, volume_info=None, **synthesis_kwargs):
    torch.manual_seed(0)
    kwargs = dict(TINY, **synthesis_kwargs)
    return networks.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_shape=parse_size(size), img_channels=img_channels,
                              mapping_kwargs=dict(num_layers=2, **(mapping or {})), synthesis_kwargs=kwargs,
                              volume_info=volume_info)


def make_D(size: str, c_dim: int = 0, img_channels: int = 1, **kwargs):
    torch.manual_seed(1)
    kwargs = dict(TINY, **kwargs)
    kwargs.setdefault('epilogue_kwargs', dict(mbstd_group_size=2))
    kwargs.setdefault('mapping_kwargs', dict(num_layers=2))
    return networks.Discriminator(c_dim=c_dim, img_shape=parse_size(size), img_channels=img_channels, **kwargs)


def labels(n: int, c_dim: int) -> torch.Tensor:
    return F.one_hot(torch.arange(n) % c_dim, c_dim).float() if c_dim else torch.zeros([n, 0])

#----------------------------------------------------------------------------
# Shapes.

ARCH_PAIRS = [('skip', 'resnet'), ('resnet', 'skip'), ('orig', 'orig')]


@pytest.mark.parametrize('size', ['32x32x32', '64x64x16', '80x96x112'])
@pytest.mark.parametrize('g_arch,d_arch', ARCH_PAIRS)
@pytest.mark.parametrize('depth_schedule', ['early', 'late'])
def test_output_shapes(size, g_arch, d_arch, depth_schedule):
    if size == '80x96x112' and depth_schedule == 'late':
        pytest.skip('isotropic doublings: both schedules are the same')
    c_dim = 3 if g_arch != 'orig' else 0
    G = make_G(size, c_dim=c_dim, img_channels=2, architecture=g_arch, depth_schedule=depth_schedule)
    D = make_D(size, c_dim=c_dim, img_channels=2, architecture=d_arch, depth_schedule=depth_schedule)
    c = labels(2, c_dim)
    img = G(torch.randn([2, 8]), c)
    assert img.shape == (2, 2, *parse_size(size)) and img.dtype == torch.float32
    out = D(img, c)
    assert out.shape == (2, 1) and torch.isfinite(out).all()

    # D mirrors G: block idx reads G's block idx shape and undoes its up-sampling.
    sched = make_schedule(parse_size(size), depth_schedule=depth_schedule, **TINY)
    for idx in range(1, sched.num_blocks + 1):
        assert getattr(D, f'b{idx}').shape == sched.block_shapes[idx] == getattr(G.synthesis, f'b{idx}').shape
        assert getattr(D, f'b{idx}').down == sched.block_up[idx] == getattr(G.synthesis, f'b{idx}').up
    assert D.b0.shape == sched.base_shape and G.synthesis.b0.const.shape[1:] == sched.base_shape


@pytest.mark.parametrize('depth_schedule,c_dim', [('early', 0), ('late', 2)])
def test_output_shapes_prostate(depth_schedule, c_dim):
    G = make_G('256x256x24', c_dim=c_dim, depth_schedule=depth_schedule, channel_base=512, channel_max=4)
    D = make_D('256x256x24', c_dim=c_dim, depth_schedule=depth_schedule, channel_base=512, channel_max=4)
    assert G.num_ws == 14  # As the 2D 256 network: 1 + 6 * 2 convs + the last ToRGB.
    with torch.no_grad():
        img = G(torch.randn([2, 8]), labels(2, c_dim))
        assert img.shape == (2, 1, 24, 256, 256)
        assert D(img, labels(2, c_dim)).shape == (2, 1)
    noise_shapes = [b.shape for n, b in G.synthesis.named_buffers() if n.endswith('b3.conv1.noise_const')]
    assert noise_shapes == [(24, 32, 32) if depth_schedule == 'early' else (3, 32, 32)]


def test_num_ws_and_noise_buffers():
    G = make_G('80x96x112', architecture='resnet')
    assert G.num_ws == G.synthesis.num_ws == G.mapping.num_ws == 10  # K = 4: 1 + 4 * 2 + 1.
    assert G.synthesis.b2.conv0.noise_const.shape == (28, 24, 20)  # [D, H, W]
    assert not hasattr(G.synthesis.b2, 'torgb') and hasattr(G.synthesis.b4, 'torgb')


def test_parameter_count_prostate_stylegan2():
    with torch.device('meta'):
        G = networks.Generator(z_dim=512, c_dim=0, w_dim=512, img_shape=(24, 256, 256), img_channels=1,
                               mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(num_fp16_res=4,
                                                                                        conv_clamp=256))
        D = networks.Discriminator(c_dim=0, img_shape=(24, 256, 256), img_channels=1, num_fp16_res=4,
                                   conv_clamp=256)
    num_g = sum(p.numel() for p in G.parameters())
    num_d = sum(p.numel() for p in D.parameters())
    print(f'256x256x24 stylegan2: G {num_g / 1e6:.2f} M + D {num_d / 1e6:.2f} M = {(num_g + num_d) / 1e6:.2f} M')
    assert 150e6 <= num_g + num_d <= 175e6
    # The epilogue FC reads C * bD * bH * bW = 512 * 3 * 4 * 4 features.
    assert D.b0.fc.weight.shape == (512, 512 * 3 * 4 * 4)

#----------------------------------------------------------------------------
# Modulated convolution.


def modconv_direct(x, weight, styles, demodulate):
    """Per-sample conv3d with w = weight * s (demodulated over I * k^3), 'same' padding."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3, 4], keepdim=True) + 1e-8).sqrt()
        outs.append(F.conv3d(x[n:n + 1], w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize('fused', [True, False])
@pytest.mark.parametrize('demodulate', [True, False])
def test_modulated_conv3d_matches_direct_formula(fused, demodulate):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([3, 4, 3, 5, 6], generator=gen, dtype=torch.float64)
    weight = torch.randn([5, 4, 3, 3, 3], generator=gen, dtype=torch.float64)
    styles = torch.randn([3, 4], generator=gen, dtype=torch.float64)
    noise = torch.randn([3, 1, 3, 5, 6], generator=gen, dtype=torch.float64)
    got = layers.modulated_conv3d(x, weight, styles, noise=noise, padding=1, demodulate=demodulate,
                                    fused_modconv=fused)
    want = modconv_direct(x, weight, styles, demodulate) + noise
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.slow
@pytest.mark.parametrize('up', [1, [2, 2, 1]])
def test_modulated_conv3d_fused_equals_nonfused_with_gradients(up):
    f = networks.upfirdn3d.setup_filter([1, 3, 3, 1]).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([2, 3, 2, 3, 4], generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn([2, 3, 3, 3, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    styles = torch.randn([2, 3], generator=gen, dtype=torch.float64, requires_grad=True)
    flip = up == 1

    def run(fused):
        return lambda x, w, s: layers.modulated_conv3d(x, w, s, up=up, padding=1, resample_filter=f,
                                                         flip_weight=flip, fused_modconv=fused)
    torch.testing.assert_close(run(True)(x, weight, styles), run(False)(x, weight, styles), rtol=1e-10, atol=1e-10)
    for fused in (True, False):
        assert torch.autograd.gradcheck(run(fused), (x, weight, styles))


def test_fp16_prenormalisation_avoids_overflow():
    # Styles and weights this large overflow fp16 (max 65504) unless pre-normalised; demodulation undoes the scale.
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([2, 8, 3, 4, 4], generator=gen)
    weight = torch.randn([6, 8, 3, 3, 3], generator=gen) * 300
    styles = torch.randn([2, 8], generator=gen) * 300
    want = layers.modulated_conv3d(x, weight, styles, padding=1, fused_modconv=False)
    got = layers.modulated_conv3d(x.half(), weight, styles, padding=1, fused_modconv=False)
    assert got.dtype == torch.float16 and torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, rtol=0, atol=2e-2 * want.abs().max().item())

#----------------------------------------------------------------------------
# Generator behaviour.


def test_fused_and_nonfused_generator_agree():
    G = make_G('32x32x32', architecture='resnet').double().eval()
    ws = G.mapping(torch.randn([2, 8], dtype=torch.float64), None)
    a = G.synthesis(ws, noise_mode='const', fused_modconv=True)
    b = G.synthesis(ws, noise_mode='const', fused_modconv=False)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    # Float32 agrees to 1e-5 too.
    G = G.float()
    torch.testing.assert_close(G.synthesis(ws.float(), noise_mode='const', fused_modconv=True),
                               G.synthesis(ws.float(), noise_mode='const', fused_modconv=False), rtol=1e-5, atol=1e-5)


def test_compute_dtype_rule():
    cpu, cuda = torch.device('cpu'), torch.device('cuda')
    assert layers.compute_dtype(True, 'fp16', False, cuda) == torch.float16
    assert layers.compute_dtype(True, 'bf16', False, cuda) == torch.bfloat16
    assert layers.compute_dtype(True, 'fp16', True, cuda) == torch.float32  # force_fp32
    assert layers.compute_dtype(False, 'bf16', False, cuda) == torch.float32
    assert layers.compute_dtype(True, 'fp16', False, cpu) == torch.float32  # CPU always float32.
    G = make_G('32x32x32', num_fp16_res=2)
    assert [getattr(G.synthesis, f'b{i}').use_fp16 for i in range(4)] == [False, False, True, True]
    G = make_G('32x32x32', num_fp16_res=10)
    assert not G.synthesis.b0.use_fp16 and G.synthesis.b1.use_fp16  # Never the base block.
    with pytest.raises(ValueError, match='precision'):
        make_G('32x32x32', precision='fp8')


# Reduced precision vs float32, relative to the output's largest magnitude: fp16 keeps 11 significant bits,
# bf16 8, and errors grow through the blocks, so 1 % (fp16) and 5 % (bf16) of the peak (measured on CPU with the
# reference ops: G 0.2 % and 1.2 %, D features 0.08 % and 0.85 %).
@pytest.mark.parametrize('precision,tol', [('fp16', 1e-2), ('bf16', 5e-2)])
@pytest.mark.parametrize('channels_last', [False, True])
def test_reduced_precision_close_to_fp32(monkeypatch, precision, tol, channels_last):
    # CPU runs blocks in float32 by design; lift the device rule to exercise the casting and the fp16/bf16 convs.
    monkeypatch.setattr(networks, 'compute_dtype',
                        lambda use, prec, force, device, full=torch.float32: layers.REDUCED_DTYPES[prec]
                        if use and not force else full)
    G = make_G('16x16x16', num_fp16_res=2, conv_clamp=256, precision=precision, channels_last=channels_last).eval()
    D = make_D('16x16x16', num_fp16_res=2, conv_clamp=256, precision=precision, channels_last=channels_last)
    seen = {}
    for name, module in [('g1', G.synthesis.b1.conv1), ('g2', G.synthesis.b2.conv1), ('d2', D.b2.conv0)]:
        module.register_forward_hook(lambda mod, inp, out, name=name: seen.update({name: out}))
    G.synthesis.b2.conv0.register_forward_pre_hook(lambda mod, inp: seen.update(g2_in=inp[0]))
    ws = G.mapping(torch.randn([2, 8]), None)
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode='const', force_fp32=True)
        assert seen['g2'].dtype == torch.float32
        got = G.synthesis(ws, noise_mode='const')
        reduced = layers.REDUCED_DTYPES[precision]
        assert seen['g1'].dtype == seen['g2'].dtype == reduced and got.dtype == torch.float32
        assert seen['g2_in'].is_contiguous(memory_format=torch.channels_last_3d) == channels_last
        assert (got - ref).abs().max() <= tol * ref.abs().max()
        # D: compare the features entering the float32 epilogue (its logits are near 0, so relative errors there
        # say little).
        D.b0.register_forward_pre_hook(lambda mod, inp: seen.update(d_feat=inp[0]))
        D(ref, None, force_fp32=True)
        feat_ref = seen['d_feat']
        d_got = D(ref, None)
        assert seen['d2'].dtype == reduced and d_got.dtype == torch.float32 and torch.isfinite(d_got).all()
        assert (seen['d_feat'].float() - feat_ref).abs().max() <= tol * feat_ref.abs().max()


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@pytest.mark.parametrize('precision,tol', [('fp16', 1e-2), ('bf16', 5e-2)])
def test_reduced_precision_cuda(precision, tol):
    G = make_G('64x64x16', num_fp16_res=3, conv_clamp=256, precision=precision, channels_last=True).cuda().eval()
    ws = G.mapping(torch.randn([2, 8], device='cuda'), None)
    with torch.no_grad():
        ref = G.synthesis(ws, noise_mode='const', force_fp32=True)
        got = G.synthesis(ws, noise_mode='const')
    assert (got - ref).abs().max() <= tol * ref.abs().max()


def test_truncation():
    G = make_G('32x32x32').eval()
    G.mapping.w_avg.copy_(torch.randn([8]))
    z = torch.randn([3, 8])
    ws = G.mapping(z, None)
    torch.testing.assert_close(G.mapping(z, None, truncation_psi=0), G.mapping.w_avg.expand(3, G.num_ws, 8))
    half = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg))
    torch.testing.assert_close(half[:, 2:], ws[:, 2:])
    # psi = 0 makes every z give the same volume.
    img = G(z, None, truncation_psi=0, noise_mode='const')
    torch.testing.assert_close(img[0], img[2])


def test_noise_modes():
    G = make_G('32x32x32').eval()
    for name, p in G.synthesis.named_parameters():
        if name.endswith('noise_strength'):
            p.data.fill_(0.5)
    ws = G.mapping(torch.randn([2, 8]), None)
    a, b = (G.synthesis(ws, noise_mode='const') for _ in range(2))
    assert torch.equal(a, b)
    r1, r2 = (G.synthesis(ws, noise_mode='random') for _ in range(2))
    assert (r1 - r2).abs().max() > 1e-3
    n1, n2 = (G.synthesis(ws, noise_mode='none') for _ in range(2))
    assert torch.equal(n1, n2) and (n1 - a).abs().max() > 1e-3
    with pytest.raises(ValueError, match='noise_mode'):
        G.synthesis(ws, noise_mode='fixed')


def test_w_avg_update_rule():
    G = make_G('32x32x32')
    z = torch.randn([4, 8])
    G.eval()
    G.mapping(z, None)
    assert torch.equal(G.mapping.w_avg, torch.zeros([8]))  # Not in eval mode.
    G.train()
    G.mapping(z, None, skip_w_avg_update=True)
    assert torch.equal(G.mapping.w_avg, torch.zeros([8]))
    ws = G.mapping(z, None)
    torch.testing.assert_close(G.mapping.w_avg, 0.005 * ws[:, 0].mean(dim=0))  # beta 0.995 from zero.
    before = G.mapping.w_avg.clone()
    ws = G.mapping(z * 2, None)
    torch.testing.assert_close(G.mapping.w_avg, 0.995 * before + 0.005 * ws[:, 0].mean(dim=0))


def test_mapping_matches_formula():
    # Unconditional, one linear layer: w = (lr / sqrt(z_dim)) * W_stored @ normalize(z) + lr * b_stored.
    m = networks.MappingNetwork(z_dim=5, c_dim=0, w_dim=3, num_ws=2, num_layers=1, activation='linear',
                                lr_multiplier=0.1)
    z = torch.randn([4, 5])
    zn = z / z.square().mean(dim=1, keepdim=True).add(1e-8).sqrt()
    want = zn @ (m.fc0.weight * 0.1 / np.sqrt(5)).t() + m.fc0.bias * 0.1
    torch.testing.assert_close(m(z, None), want[:, None].expand(4, 2, 3))
    assert m.fc0.weight.std() > 3  # Stored as randn / lr_multiplier.

#----------------------------------------------------------------------------
# Discriminator pieces.


def test_minibatch_std_formula():
    x = torch.randn([4, 6, 2, 3, 3], dtype=torch.float64)
    y = networks.MinibatchStdLayer(group_size=2, num_channels=2)(x)
    assert y.shape == (4, 8, 2, 3, 3)
    torch.testing.assert_close(y[:, :6], x)
    for i in range(4):
        group = x[[i % 2, i % 2 + 2]]  # Sample i is in group i % (N / G).
        std = (group.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [C, D, H, W]
        want = torch.stack([std[:3].mean(), std[3:].mean()])
        torch.testing.assert_close(y[i, 6:, 0, 0, 0], want)
        assert torch.equal(y[i, 6:], y[i, 6:, :1, :1, :1].expand(2, 2, 3, 3))
    with pytest.raises(ValueError, match='divisible'):
        networks.MinibatchStdLayer(group_size=3)(x)


def test_projection_conditioning_formula():
    D = make_D('32x32x32', c_dim=3, cmap_dim=5)
    captured = {}
    D.b0.out.register_forward_hook(lambda mod, inp, out: captured.update(out=out))
    img, c = torch.randn([2, 1, 32, 32, 32]), labels(2, 3)
    got = D(img, c)
    want = (captured['out'] * D.mapping(None, c)).sum(dim=1, keepdim=True) / np.sqrt(5)
    torch.testing.assert_close(got, want)
    assert make_D('32x32x32', c_dim=3).b0.cmap_dim == 32  # Default: channels of the base block.


def test_freeze_d():
    D = make_D('32x32x32', block_kwargs=dict(freeze_layers=5))
    b3, b2 = D.b3, D.b2  # Input side first: b3.fromrgb, conv0, conv1, skip (4 layers), then b2.conv0.
    for layer in (b3.fromrgb, b3.conv0, b3.conv1, b3.skip, b2.conv0):
        assert list(layer.parameters()) == [] and 'weight' in dict(layer.named_buffers())
    assert b2.conv1.weight.requires_grad and isinstance(b2.conv1.weight, torch.nn.Parameter)
    # Same numbers as an unfrozen D holding the same weights.
    ref = make_D('32x32x32')
    misc.copy_params_and_buffers(D, ref, require_all=True)
    img = torch.randn([2, 1, 32, 32, 32])
    torch.testing.assert_close(D(img, None), ref(img, None))
    frozen = sum(p.numel() for p in D.parameters())
    assert frozen < sum(p.numel() for p in ref.parameters())

#----------------------------------------------------------------------------
# Gradients.


def nonzero_grad(p: torch.nn.Parameter) -> bool:
    return p.grad is not None and p.grad.abs().max() > 0


@pytest.mark.parametrize('g_arch,d_arch', ARCH_PAIRS)
def test_gradients_reach_every_parameter(g_arch, d_arch):
    G = make_G('64x64x16', c_dim=2, architecture=g_arch).requires_grad_(True)
    D = make_D('64x64x16', c_dim=2, architecture=d_arch).requires_grad_(True)
    c = labels(2, 2)
    F.softplus(-D(G(torch.randn([2, 8]), c), c)).sum().backward()  # G loss.
    missing = [n for n, p in G.named_parameters() if not nonzero_grad(p)]
    assert missing == []
    D.zero_grad(set_to_none=True)
    F.softplus(D(torch.randn([2, 1, 16, 64, 64]), c)).sum().backward()  # D loss on "fakes".
    missing = [n for n, p in D.named_parameters() if not nonzero_grad(p)]
    assert missing == []


@pytest.mark.parametrize('d_arch', ['resnet', 'skip'])
def test_r1_double_backward(d_arch):
    D = make_D('32x32x32', c_dim=2, architecture=d_arch).requires_grad_(True)
    img = torch.randn([2, 1, 32, 32, 32], requires_grad=True)
    (grad,) = torch.autograd.grad(D(img, labels(2, 2)).sum(), img, create_graph=True)
    assert grad.shape == img.shape and grad.abs().max() > 0
    grad.square().sum().backward()
    # Every weight gets an R1 gradient; biases after the last non-linearity with a curved (mbstd) part do not.
    missing = [n for n, p in D.named_parameters() if n.endswith('weight') and not nonzero_grad(p)]
    assert missing == []
    assert nonzero_grad(D.b3.conv0.bias)


@pytest.mark.slow
def test_r1_gradgradcheck_small():
    # 8x8x4 volume, one block (down in x and y only) and the epilogue, 2 channels: small enough for float64.
    D = networks.Discriminator(c_dim=0, img_shape=(4, 8, 8), img_channels=1, channel_base=16, channel_max=2,
                               epilogue_kwargs=dict(mbstd_group_size=2), architecture='resnet').double()
    assert D.b1.down == (2, 2, 1)
    img = torch.randn([2, 1, 4, 8, 8], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: D(x, None), (img,))
    assert torch.autograd.gradgradcheck(lambda x: D(x, None), (img,), fast_mode=True)

#----------------------------------------------------------------------------
# Persistence and bad input.


@pytest.mark.slow
def test_pickle_roundtrip_in_fresh_process(tmp_path):
    info = VolumeInfo(spacing=(0.5, 0.5, 3.0), centre=(1.0, 2.0, 3.0))
    G = make_G('32x32x32', c_dim=2, architecture='resnet', volume_info=info.to_dict()).eval()
    z = torch.randn([2, 8])
    c = labels(2, 2)
    with torch.no_grad():
        want = G(z, c, noise_mode='const').numpy()
    with open(tmp_path / 'G.pkl', 'wb') as f:
        pickle.dump(dict(G=G, z=z, c=c), f)
    script = ('import pickle, sys, numpy, torch\n'
              f'data = pickle.load(open({str(tmp_path / "G.pkl")!r}, "rb"))\n'
              'G = data["G"]\n'
              'info = G.volume_info\n'
              'assert info.spacing == (0.5, 0.5, 3.0) and info.centre == (1.0, 2.0, 3.0), info\n'
              'assert G.img_shape == (32, 32, 32)\n'
              'with torch.no_grad():\n'
              '    img = G(data["z"], data["c"], noise_mode="const")\n'
              f'numpy.save({str(tmp_path / "out.npy")!r}, img.numpy())\n')
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, '-c', script], cwd=str(tmp_path), env=env, check=True, timeout=120)
    got = np.load(tmp_path / 'out.npy')
    np.testing.assert_array_equal(got, want)


def test_bad_arguments():
    with pytest.raises(ValueError, match='architecture'):
        make_G('32x32x32', architecture='unet')
    with pytest.raises(ValueError, match='architecture'):
        make_D('32x32x32', architecture='unet')
    with pytest.raises(ValueError, match='spacing: expected three positive sizes'):
        networks.Generator(8, 0, 8, (32, 32, 32), 1, volume_info=dict(spacing=(1, 1)))
    with pytest.raises(ValueError, match='does not factor'):
        make_G('250x256x24')
    G = make_G('32x32x32')
    with pytest.raises(AssertionError):
        G.synthesis(torch.zeros([1, G.num_ws + 1, 8]))
