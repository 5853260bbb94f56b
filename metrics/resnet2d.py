# SPDX-License-Identifier: Apache-2.0
"""The 2D ResNet-50 of RadImageNet (Mei et al. 2022) in the layout of its PyTorch weights, for 2.5D feature distances.

RadImageNet published Keras weights (`RadImageNet-ResNet50_notop.h5`); the PyTorch file that MONAI's tutorials and
MAISI load (`RadImageNet-ResNet50_notop.pth`, from the Warvito/radimagenet-models hub) keeps torchvision's parameter
names (conv1, bn1, layer1.0.conv1, layer1.0.downsample.0, ...) but Keras' ResNet v1 layout, which torchvision's
resnet50 does not have: every convolution has a bias, a bottleneck's stride sits on its first 1x1 convolution (not
on the 3x3 one), batch norms use Keras' epsilon 1.001e-5, and there is no pooling or classifier. The module is
built here in torch (torchvision is not a dependency) so that this state dict loads with strict key checking.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from torch_utils import persistence

BN_EPS = 1.001e-5  # Keras' BatchNormalization default, kept by the converted weights.
STAGES = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2))  # (width, blocks, stride) of layer1..layer4.


def _batch_norm(channels: int) -> torch.nn.BatchNorm2d:
    return torch.nn.BatchNorm2d(channels, eps=BN_EPS)


@persistence.persistent_class
class KerasBottleneck(torch.nn.Module):
    """1x1 (strided) reduce, 3x3, 1x1 expand by 4, each with bias and batch norm, plus the shortcut."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = torch.nn.Conv2d(in_channels, width, 1, stride=stride)
        self.bn1 = _batch_norm(width)
        self.conv2 = torch.nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = _batch_norm(width)
        self.conv3 = torch.nn.Conv2d(width, out_channels, 1)
        self.bn3 = _batch_norm(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = torch.nn.Sequential(torch.nn.Conv2d(in_channels, out_channels, 1, stride=stride),
                                                  _batch_norm(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


@persistence.persistent_class
class RadImageNetResNet50(torch.nn.Module):
    """RadImageNet's ResNet-50 backbone: [N, 3, H, W] -> layer4 map [N, 2048, H/32, W/32] (rounded up)."""

    num_features = 2048

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 64, 7, stride=2, padding=3)
        self.bn1 = _batch_norm(64)
        self.maxpool = torch.nn.MaxPool2d(3, stride=2, padding=1)
        channels = 64
        for idx, (width, count, stride) in enumerate(STAGES):
            blocks = [KerasBottleneck(channels, width, stride)]
            channels = width * KerasBottleneck.expansion
            blocks += [KerasBottleneck(channels, width) for _ in range(count - 1)]
            setattr(self, f'layer{idx + 1}', torch.nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] -> layer4 averaged over H and W, [N, 2048]."""
        return self.forward(x).mean(dim=(2, 3))


def clean_state_dict(data: Any) -> dict[str, torch.Tensor]:
    """The tensors of a RadImageNet checkpoint: a plain state dict, or {'state_dict': ...}, `module.` stripped."""
    state = data.get('state_dict', data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError('expected a state dict (or {"state_dict": ...}) of tensors')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def load_radimagenet(path: str, device: torch.device | str = 'cpu') -> RadImageNetResNet50:
    """RadImageNet ResNet-50 with the weights in `path` (torch.load with weights_only=True), in eval mode.

    Raises:
        ValueError: the file is not RadImageNet ResNet-50 weights (one line naming the file).
    """
    try:
        with warnings.catch_warnings():  # torch warns before it refuses a TorchScript file; the error below says it.
            warnings.simplefilter('ignore', UserWarning)
            data = torch.load(path, map_location='cpu', weights_only=True)
        net = RadImageNetResNet50()
        net.load_state_dict(clean_state_dict(data), strict=True)
    except (RuntimeError, ValueError, KeyError, OSError, EOFError) as e:
        message = ' '.join(str(e).split())[:300]
        raise ValueError(f'{path} is not RadImageNet ResNet-50 weights ({message})') from None
    return net.eval().requires_grad_(False).to(device)
