"""The CIFAR ResNets of He et al. 2016 (section 4.2), with the option-A shortcut.

Laid out so that the checkpoints of ``../shared/data/cifar10/`` (akamaster/pytorch_resnet_cifar10)
load with ``strict=True``: ``conv1``, ``bn1``, ``layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}``,
``linear``. The option-A shortcut has no parameters, so it adds no keys.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import nn

from ..layers import PadShortcut

__all__ = ["CIFAR_RESNET_DEPTHS", "CifarResNet", "PadShortcut", "cifar_resnet"]


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
