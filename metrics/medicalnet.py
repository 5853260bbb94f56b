# SPDX-License-Identifier: Apache-2.0
"""3D ResNets in the layout of MedicalNet / Med3D (Chen et al. 2019), for 3D feature distances.

The module and parameter names match the published MedicalNet weights (resnet_{10,18,34,50}*.pth), so their state
dicts load directly once the `module.` prefix of their DataParallel training is stripped; the segmentation head
(`conv_seg.*`) is not built. The architecture: 1-channel input; conv 7^3 stride 2, max-pool stride 2; four stages of
basic (10/18/34) or bottleneck (50) blocks with strides 1, 2, 1, 1 and dilations 1, 1, 2, 4 (total stride 8);
shortcuts of type A (stride-sampled identity padded with zero channels, no parameters) or B (1x1x1 conv + batch
norm). Features are layer4's output averaged over D, H, W: 512-d for depths 10/18/34, 2048-d for 50.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.nn.functional as F

from torch_utils import persistence

DEPTHS = {10: ('basic', (1, 1, 1, 1)), 18: ('basic', (2, 2, 2, 2)), 34: ('basic', (3, 4, 6, 3)),
          50: ('bottleneck', (3, 4, 6, 3))}
DEFAULT_SHORTCUT = {10: 'B', 18: 'A', 34: 'A', 50: 'B'}  # What the published weights use.

#----------------------------------------------------------------------------
# Blocks.


@persistence.persistent_class
class ZeroPadShortcut(torch.nn.Module):
    """Shortcut A: sample every `stride`-th voxel and append zero channels up to out_channels."""

    def __init__(self, out_channels: int, stride: int) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride, ::self.stride]
        return F.pad(x, [0, 0, 0, 0, 0, 0, 0, self.out_channels - x.shape[1]])  # Pads the channel axis.


def _shortcut(in_channels: int, out_channels: int, stride: int, shortcut_type: str) -> torch.nn.Module | None:
    if stride == 1 and in_channels == out_channels:
        return None
    if shortcut_type == 'A':
        return ZeroPadShortcut(out_channels, stride)
    return torch.nn.Sequential(torch.nn.Conv3d(in_channels, out_channels, 1, stride=stride, bias=False),
                               torch.nn.BatchNorm3d(out_channels))


def _conv3(in_channels: int, out_channels: int, stride: int = 1, dilation: int = 1) -> torch.nn.Conv3d:
    return torch.nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation,
                           bias=False)


@persistence.persistent_class
class BasicBlock(torch.nn.Module):
    """Two 3x3x3 convs with batch norm and a residual connection."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1,
                 downsample: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3(in_channels, channels, stride, dilation)
        self.bn1 = torch.nn.BatchNorm3d(channels)
        self.conv2 = _conv3(channels, channels, 1, dilation)
        self.bn2 = torch.nn.BatchNorm3d(channels)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


@persistence.persistent_class
class Bottleneck(torch.nn.Module):
    """1x1x1 reduce, 3x3x3 (strided, dilated), 1x1x1 expand by 4, with a residual connection."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dilation: int = 1,
                 downsample: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv3d(in_channels, channels, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm3d(channels)
        self.conv2 = _conv3(channels, channels, stride, dilation)
        self.bn2 = torch.nn.BatchNorm3d(channels)
        self.conv3 = torch.nn.Conv3d(channels, channels * 4, 1, bias=False)
        self.bn3 = torch.nn.BatchNorm3d(channels * 4)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))

#----------------------------------------------------------------------------
# The network.


@persistence.persistent_class
class MedicalNetResNet(torch.nn.Module):
    """MedicalNet 3D ResNet backbone (no segmentation head).

    Args:
        depth: 10, 18, 34 or 50.
        shortcut_type: 'A' or 'B'; None: what the published weights of this depth use (B for 10 and 50).
    """

    def __init__(self, depth: int = 10, shortcut_type: str | None = None) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f'MedicalNet depth must be one of {sorted(DEPTHS)}, got {depth}')
        shortcut_type = shortcut_type or DEFAULT_SHORTCUT[depth]
        if shortcut_type not in ('A', 'B'):
            raise ValueError(f'shortcut_type must be "A" or "B", got {shortcut_type!r}')
        kind, counts = DEPTHS[depth]
        block = BasicBlock if kind == 'basic' else Bottleneck
        self.depth = depth
        self.shortcut_type = shortcut_type
        self.conv1 = torch.nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = torch.nn.BatchNorm3d(64)
        self.maxpool = torch.nn.MaxPool3d(3, stride=2, padding=1)
        channels = 64
        stages = ((64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4))  # (width, stride, dilation) per stage.
        for idx, (count, (width, stride, dilation)) in enumerate(zip(counts, stages)):
            blocks = [block(channels, width, stride, dilation,
                            _shortcut(channels, width * block.expansion, stride, shortcut_type))]
            channels = width * block.expansion
            blocks += [block(channels, width, 1, dilation) for _ in range(count - 1)]
            setattr(self, f'layer{idx + 1}', torch.nn.Sequential(*blocks))
        self.num_features = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, D, H, W] -> layer4 feature map [N, num_features, D/8, H/8, W/8] (rounded up)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, D, H, W] -> globally average-pooled layer4 features [N, num_features]."""
        return self.forward(x).mean(dim=(2, 3, 4))

#----------------------------------------------------------------------------
# Weights.


def clean_state_dict(data: Any) -> dict[str, torch.Tensor]:
    """The backbone's tensors from a MedicalNet checkpoint: unwrap {'state_dict': ...}, strip `module.`, drop the
    segmentation head."""
    state = data.get('state_dict', data) if isinstance(data, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError('expected a state dict (or {"state_dict": ...}) of tensors')
    state = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.startswith('conv_seg.')}


def infer_shortcut_type(state: dict[str, torch.Tensor]) -> str:
    """'B' when layer2's first block has a learned shortcut, else 'A'."""
    return 'B' if 'layer2.0.downsample.0.weight' in state else 'A'


def load_medicalnet(path: str, depth: int, device: torch.device | str = 'cpu') -> MedicalNetResNet:
    """A MedicalNet backbone of `depth` with the weights in `path` (torch.load with weights_only=True), in eval mode.

    Raises:
        ValueError: the file is not a MedicalNet state dict of this depth (one line naming the file).
    """
    try:
        with warnings.catch_warnings():  # torch warns before it refuses a TorchScript file; the error below says it.
            warnings.simplefilter('ignore', UserWarning)
            data = torch.load(path, map_location='cpu', weights_only=True)
        state = clean_state_dict(data)
        net = MedicalNetResNet(depth, infer_shortcut_type(state))
        net.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, KeyError, OSError, EOFError) as e:
        message = ' '.join(str(e).split())[:300]
        raise ValueError(f'{path} is not MedicalNet ResNet-{depth} weights ({message})') from None
    return net.eval().requires_grad_(False).to(device)
