"""Tracing: the model is never changed, modes come back, and what cannot be pruned says why."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from surgery_cases import TOLERANCE
from torch import nn

from pytest_prune.equivalence import max_abs_difference
from pytest_prune.errors import PruneError, TraceError
from pytest_prune.models import build_model
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


def _seeded(factory):
    with torch.random.fork_rng():  # seeded weights without touching the global generator
        torch.manual_seed(0)
        return factory()


def _snapshot(model: nn.Module):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        {n: m.training for n, m in model.named_modules()},
    )


def _assert_unchanged(model: nn.Module, snapshot) -> None:
    state, modes = snapshot
    now = model.state_dict()
    assert now.keys() == state.keys()
    assert all(torch.equal(now[k], state[k]) for k in state)
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_find_and_prune_leave_weights_modes_and_hooks_alone():
    model = build_model("cifar-resnet20").model
    model.train()
    model.layer1[0].bn1.eval()  # mixed modes must come back exactly, not as model.train()
    x = torch.randn(2, 3, 32, 32)
    before = _snapshot(model)
    groups = find_channel_groups(model, x)
    _assert_unchanged(model, before)
    plan = PrunePlan({"conv1": (0, 3), "layer2.0.conv2": (1,)})
    pruned = prune_model(model, groups, plan, x)
    _assert_unchanged(model, before)
    assert {n: m.training for n, m in pruned.named_modules()} == before[1]
    assert model.layer2[0].shortcut.positions == list(range(8, 24))
    assert pruned.layer2[0].shortcut.positions == list(range(7, 21))


def test_prune_keeps_frozen_parameters_frozen():
    model = build_model("lenet5").model
    model.features[0].requires_grad_(False)
    x = torch.randn(2, 1, 32, 32)
    groups = find_channel_groups(model, x)
    pruned = prune_model(model, groups, PrunePlan({"features.0": (1,), "features.3": (2,)}), x)
    assert [p.requires_grad for p in pruned.parameters()] == [
        p.requires_grad for p in model.parameters()
    ]


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.bright = nn.Conv2d(3, 8, 3)
        self.dark = nn.Conv2d(3, 8, 3)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        y = self.bright(x) if x.mean() > 0 else self.dark(x)
        return self.head(y.mean((2, 3)))


class CountsToo(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x), 3


class NoGradInside(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        with torch.no_grad():
            return self.conv(x)


@pytest.mark.parametrize(
    "model, shape, words",
    [
        (DataDependent(), (2, 3, 8, 8), ["'dark'", "control flow"]),
        (CountsToo(), (2, 3, 8, 8), ["tuple", "int", "tensor"]),
        (NoGradInside(), (2, 3, 8, 8), ["autograd", "no_grad"]),
        (build_model("lenet5").model, (2, 3, 32, 32), ["LeNet5", "(2, 3, 32, 32)", "example input"]),
    ],
    ids=["data-dependent-branch", "non-tensor-output", "no-grad", "wrong-input"],
)
def test_untraceable_models_raise_trace_error_naming_the_problem(model, shape, words):
    model.train()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0))  # mean > 0: 'bright' runs
    with pytest.raises(TraceError) as info:
        find_channel_groups(model, x)
    for word in words:
        assert word in str(info.value)
    assert model.training
    assert not any(m._forward_hooks for m in model.modules())  # TP's hooks did not leak


def test_data_dependent_branch_can_be_ignored_when_the_layer_is_unused():
    model = DataDependent()
    x = torch.rand(2, 3, 8, 8)  # positive mean: 'dark' never runs
    assert [g.name for g in find_channel_groups(model, x, ignore=["dark"])] == ["bright"]


class NormAfterConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.norm = nn.GroupNorm(2, 8)
        self.mid = nn.Conv2d(8, 8, 3)
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        return self.head(self.mid(F.relu(self.norm(self.conv(x)))).mean((2, 3)))


def test_layer_we_cannot_prune_raises_and_ignore_fixes_it():
    model, x = NormAfterConv(), torch.randn(2, 3, 10, 10)
    with pytest.raises(TraceError, match=r"'norm' \(GroupNorm\).*ignore=\['conv'\]"):
        find_channel_groups(model, x)
    assert [g.name for g in find_channel_groups(model, x, ignore=["conv"])] == ["mid"]


class GroupedConvInConcat(nn.Module):
    """A grouped conv with one output per group (groups == out != in), which Torch-Pruning takes
    for a depthwise conv, inside a concat that a depthwise conv then reads."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 2, 3, padding=1)
        self.expand = nn.Conv2d(2, 4, 3, padding=1)
        self.grouped = nn.Conv2d(4, 2, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        a = self.stem(x)
        y = torch.cat([a, self.grouped(self.expand(a))], 1)
        z = torch.cat([y, self.depthwise(y)], 1)
        return self.head(z.mean((2, 3)))


def test_misread_grouped_conv_does_not_leak_into_other_groups():
    model, x = _seeded(GroupedConvInConcat), torch.randn(2, 1, 6, 6)
    with pytest.raises(TraceError, match=r"'grouped' \(Conv2d\) has groups=2 with one output.*ignore=\['grouped', ...\]"):
        find_channel_groups(model, x)
    groups = find_channel_groups(model, x, ignore=["expand", "grouped"])
    assert [g.name for g in groups] == ["stem"]
    assert [(m.module, m.role, m.indices) for m in groups[0].members] == [
        ("stem", "producer", ((0,), (1,))),
        ("expand", "consumer", ((0,), (1,))),
        ("depthwise", "producer", ((0,), (1,))),
        ("head", "consumer", ((0, 4), (1, 5))),
    ]
    for plan in (PrunePlan({"stem": (0,)}), PrunePlan({"stem": (1,)})):
        pruned = prune_model(model, groups, plan, x)
        assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE


def test_ignore_names_must_be_modules():
    with pytest.raises(TraceError, match="'layer9'.*named_modules"):
        find_channel_groups(build_model("lenet5").model, torch.randn(2, 1, 32, 32), ignore=["layer9"])


def test_ignored_producer_keeps_all_its_channels():
    model, x = build_model("cifar-resnet20").model, torch.randn(2, 3, 32, 32)
    names = {g.name for g in find_channel_groups(model, x, ignore=["layer1.0.conv1", "layer2.2.conv2"])}
    # layer2.2.conv2 produces the stage-1 stream (shifted) and the stage-2 padded channels
    assert names.isdisjoint({"layer1.0.conv1", "conv1", "layer2.0.conv2"})
    assert "layer3.0.conv2" in names and "layer1.1.conv1" in names


class FullyConvolutional(nn.Module):
    """Outputs a feature map: the last conv's channels are the output, and the input is added back."""

    def __init__(self):
        super().__init__()
        self.refine = nn.Conv2d(3, 3, 3, padding=1)
        self.body = nn.Conv2d(3, 6, 3, padding=1)
        self.out = nn.Conv2d(6, 4, 1)

    def forward(self, x):
        return self.out(F.relu(self.body(x + self.refine(x))))


def test_channels_tied_to_model_input_or_output_are_not_groups():
    model, x = FullyConvolutional(), torch.randn(2, 3, 8, 8)
    groups = find_channel_groups(model, x)
    assert [g.name for g in groups] == ["body"]  # 'refine' is tied to the input, 'out' is the output
    plan = PrunePlan({"body": (0, 5)})
    pruned = prune_model(model, groups, plan, x)
    assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE


def test_plans_that_do_not_fit_the_groups_raise_prune_error():
    model, x = build_model("lenet5").model, torch.randn(2, 1, 32, 32)
    groups = find_channel_groups(model, x)
    with pytest.raises(PruneError, match="all 6 channels of group 'features.0'"):
        prune_model(model, groups, PrunePlan({"features.0": tuple(range(6))}), x)
    with pytest.raises(PruneError, match="'conv9'"):
        prune_model(model, groups, PrunePlan({"conv9": (0,)}), x)
    with pytest.raises(PruneError, match=r"positions \[6\]"):
        prune_model(model, groups, PrunePlan({"features.0": (6,)}), x)


def test_groups_of_another_model_raise_trace_error():
    x = torch.randn(2, 3, 32, 32)
    groups = find_channel_groups(build_model("cifar-resnet20").model, x)
    other = build_model("cifar-resnet32").model
    with pytest.raises(TraceError, match="'conv1'.*find_channel_groups"):
        prune_model(other, groups, PrunePlan({"conv1": (0,)}), x)
