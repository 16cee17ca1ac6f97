"""Feature points: where a group's channel is read (after the activation module, per chain)."""

from __future__ import annotations

import torch

from pytest_prune.criteria._activations import captured_outputs, feature_points
from pytest_prune.models.cifar_resnet import CifarResNet
from pytest_prune.surgery import find_channel_groups


def test_points_of_the_tiny_net_are_its_activation_modules(tiny):
    points = feature_points(tiny.model, tiny.groups, tiny.batches[0][0][:1])
    assert [(p.module, p.activated) for p in points["conv1"]] == [("relu1", True)]
    assert [(p.module, p.activated) for p in points["conv2"]] == [("relu2", True)]


def test_residual_stream_has_one_point_per_chain():
    torch.manual_seed(0)
    model = CifarResNet((1, 1, 1)).eval()
    x = torch.randn(2, 3, 16, 16)
    groups = {g.name: g for g in find_channel_groups(model, x)}
    points = feature_points(model, list(groups.values()), x[:1])
    # F.relu is functional: the points stay at the BatchNorm ending each chain
    assert [p.module for p in points["layer1.0.conv1"]] == ["layer1.0.bn1"]
    stem = [p.module for p in points["conv1"]]
    assert stem[0] == "bn1" and "layer1.0.bn2" in stem and all(m.endswith("bn1") or m.endswith("bn2") for m in stem)
    assert not any(m.endswith("conv2") or m == "conv1" for m in stem)


def test_capture_is_immune_to_in_place_operations_downstream():
    class InPlace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 1)
            self.relu = torch.nn.ReLU(inplace=True)

        def forward(self, x):
            y = self.conv(x)
            y += 100.0
            return self.relu(y)

    model = InPlace()
    x = torch.randn(1, 1, 3, 3)
    with captured_outputs(model, [("conv", 0)]) as maps, torch.no_grad():
        out = model(x)
        expected = model.conv(x)
    assert torch.equal(maps[("conv", 0)], expected)
    assert out.min() > 50


def test_points_do_not_extend_through_in_place_changes_and_find_reused_modules():
    """torchvision's block: bn2's output is changed in place (``out += identity``) before the
    shared ReLU reads it, so the point stays at bn2; bn1's point is the ReLU's first call."""

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
            self.conv2, self.bn2 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4)
            self.relu = torch.nn.ReLU(inplace=True)

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += x
            return self.relu(out)

    from pytest_prune.groups import ChannelGroup, GroupMember

    ids = tuple((i,) for i in range(4))
    inner = ChannelGroup("inner", "conv1", tuple(range(4)), (
        GroupMember("conv1", "producer", ids), GroupMember("bn1", "producer", ids), GroupMember("conv2", "consumer", ids)))
    outer = ChannelGroup("outer", "conv2", tuple(range(4)), (
        GroupMember("conv2", "producer", ids), GroupMember("bn2", "producer", ids)))
    points = feature_points(Block(), [inner, outer], torch.randn(1, 4, 5, 5))
    assert [(p.module, p.call, p.activated, p.reused) for p in points["inner"]] == [("relu", 0, True, True)]
    assert [(p.module, p.call, p.activated) for p in points["outer"]] == [("bn2", 0, False)]
