# SPDX-License-Identifier: Apache-2.0
"""MedicalNet backbones: feature sizes, loading DataParallel checkpoints, 3D FID of a set with itself."""

import pytest
import torch

from metrics import fid3d, medicalnet, metric_utils
from metrics.frechet_inception_distance import frechet_distance


def _randomise_batch_norm(net: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@pytest.mark.parametrize('depth, features, shortcut', [(10, 512, 'B'), (18, 512, 'A'), (50, 2048, 'B')])
def test_feature_sizes_and_stride(depth, features, shortcut):
    net = medicalnet.MedicalNetResNet(depth).eval()
    assert net.shortcut_type == shortcut and net.num_features == features
    x = torch.randn(2, 1, 8, 24, 16)
    with torch.no_grad():
        fmap = net(x)
        pooled = net.features(x)
    assert fmap.shape == (2, features, 1, 3, 2)  # Total stride 8: ceil(size / 8) per axis.
    assert pooled.shape == (2, features)
    torch.testing.assert_close(pooled, fmap.mean(dim=(2, 3, 4)))


def test_published_layout_key_names():
    keys = set(medicalnet.MedicalNetResNet(10).state_dict())
    assert {'conv1.weight', 'bn1.running_mean', 'layer1.0.conv1.weight', 'layer2.0.downsample.0.weight',
            'layer2.0.downsample.1.running_var', 'layer4.0.bn2.weight'} <= keys
    assert not any(k.startswith('layer1.0.downsample') for k in keys)  # 64 -> 64 at stride 1 needs no shortcut.
    assert not any('downsample' in k for k in medicalnet.MedicalNetResNet(18).state_dict())  # Type A: no weights.
    assert medicalnet.MedicalNetResNet(10).layer3[0].conv1.dilation == (2, 2, 2)
    assert medicalnet.MedicalNetResNet(10).layer4[0].conv1.dilation == (4, 4, 4)


@pytest.mark.slow
@pytest.mark.parametrize('depth', [10, 18])
def test_load_checkpoint_with_module_prefix_and_head(tmp_path, depth):
    torch.manual_seed(depth)
    source = medicalnet.MedicalNetResNet(depth)
    _randomise_batch_norm(source)
    state = {f'module.{k}': v for k, v in source.state_dict().items()}
    state['module.conv_seg.0.weight'] = torch.randn(512, 32, 2, 2, 2)  # The segmentation head is ignored.
    path = tmp_path / f'resnet_{depth}.pth'
    torch.save({'state_dict': state}, path)
    net = medicalnet.load_medicalnet(str(path), depth)
    assert net.shortcut_type == source.shortcut_type and not net.training
    x = torch.randn(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(net.features(x), source.eval().features(x))


def test_wrong_weights_are_a_one_line_error(tmp_path):
    path = tmp_path / 'resnet_10.pth'
    torch.save(medicalnet.MedicalNetResNet(10).state_dict(), path)
    with pytest.raises(ValueError, match='is not MedicalNet ResNet-34 weights') as info:
        medicalnet.load_medicalnet(str(path), 34)
    assert '\n' not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(ValueError, match='depth must be one of'):
        medicalnet.MedicalNetResNet(12)


def test_zscore_per_volume_and_channel():
    x = torch.randn(3, 2, 4, 5, 6) * torch.tensor([1.0, 7.0]).reshape(1, 2, 1, 1, 1) + 40
    z = fid3d.zscore(x)
    torch.testing.assert_close(z.mean(dim=(2, 3, 4)), torch.zeros(3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(2, 3, 4), unbiased=False), torch.ones(3, 2), atol=1e-4, rtol=0)


def test_fid3d_of_a_set_with_itself_is_zero(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / 'resnet_10.pth'
    torch.save({'state_dict': {f'module.{k}': v for k, v in medicalnet.MedicalNetResNet(10).state_dict().items()}},
               path)
    featurizer = fid3d.MedicalNetFeaturizer(str(path), 10, torch.device('cpu'))
    volumes = torch.rand(6, 1, 8, 16, 16) * 255
    stats = []
    for _ in range(2):
        s = metric_utils.FeatureStats(capture_mean_cov=True)
        s.append_torch(featurizer(volumes)[('volume', 0)])
        stats.append(s)
    assert stats[0].num_features == 512
    assert abs(frechet_distance(*stats[0].get_mean_cov(), *stats[1].get_mean_cov())) < 1e-6
    with pytest.raises(OSError, match='--medicalnet'):
        fid3d.get_medicalnet(None, 10, torch.device('cpu'))
