"""The CIFAR ResNets of He et al. 2016 (section 4.2), with the option-A shortcut.

Laid out so that the checkpoints of ``../shared/data/cifar10/`` (akamaster/pytorch_resnet_cifar10)
load with ``strict=True``: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``,
``linear``. The option-A shortcut has no parameters, so it adds no keys.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class _PlaceChannels(torch.autograd.Function):
    """out[:, positions[i]] = x[:, i, ::stride, ::stride]; every other output channel is zero.

    One autograd node from input to output, so that graph tracers (Torch-Pruning) see the shortcut
    as a single operation whose input and output channels are linked by ``positions``.
    """

    @staticmethod
    def forward(ctx, x, positions: torch.Tensor, out_channels: int, stride: int):
        ctx.save_for_backward(positions)
        ctx.in_shape = x.shape
        ctx.stride = stride
        sub = x[:, :, ::stride, ::stride]
        out = x.new_zeros((x.shape[0], out_channels) + tuple(sub.shape[2:]))
        out[:, positions] = sub
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (positions,) = ctx.saved_tensors
        grad_in = grad_out.new_zeros(ctx.in_shape)
        grad_in[:, :, :: ctx.stride, :: ctx.stride] = grad_out[:, positions]
        return grad_in, None, None, None


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample spatially by ``stride`` and place the input channels among
    zero channels of the wider output.

    The original places ``C_in`` channels after ``pad`` zero channels and before ``pad`` more.
    ``positions`` generalises that (output channel of each input channel) so that the shortcut
    stays exact after channels of either side are pruned; it is a plain attribute, not a buffer,
    so state dicts carry no key for it.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        pad = (out_channels - in_channels) // 2
        self.stride = stride
        self.out_channels = out_channels
        self.positions: list[int] = list(range(pad, pad + in_channels))

    @property
    def in_channels(self) -> int:
        return len(self.positions)

    def forward(self, x):
        index = torch.as_tensor(self.positions, dtype=torch.long, device=x.device)
        return _PlaceChannels.apply(x, index, self.out_channels, self.stride)

    def extra_repr(self) -> str:
        return f"in={self.in_channels}, out={self.out_channels}, stride={self.stride}"


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(in_planes, planes, stride)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, blocks_per_stage: Sequence[int], num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        in_planes = 16
        for stage, (planes, n) in enumerate(zip((16, 32, 64), blocks_per_stage), start=1):
            layers = []
            for i in range(n):
                stride = 2 if (stage > 1 and i == 0) else 1
                layers.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            setattr(self, f"layer{stage}", nn.Sequential(*layers))
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


CIFAR_RESNET_DEPTHS = (20, 32, 44, 56, 110)


def cifar_resnet(depth: int, num_classes: int = 10) -> CifarResNet:
    if depth not in CIFAR_RESNET_DEPTHS:
        raise ValueError(f"CIFAR ResNet depth must be one of {CIFAR_RESNET_DEPTHS}, got {depth}")
    n = (depth - 2) // 6
    return CifarResNet((n, n, n), num_classes)
