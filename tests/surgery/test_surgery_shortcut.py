"""Known answers for the option-A shortcut: groups across stages, its pruner, MACs, a checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from surgery_cases import TOLERANCE, random_plan
from torch import nn

from pytest_prune.equivalence import check_pruned_sizes, max_abs_difference
from pytest_prune.models import build_model, load_weights
from pytest_prune.layers import PadShortcut
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import PadShortcutPruner, find_channel_groups, prune_model
from pytest_prune.surgery.graph import trace_model


def _member(group, module, role="producer"):
    (found,) = [m for m in group.members if m.module == module and m.role == role]
    return found


def test_resnet20_stream_group_spans_three_stages_with_offsets(zoo_case):
    groups = {g.name: g for g in zoo_case("cifar-resnet20").groups}
    stream = groups["conv1"]
    assert stream.root_indices == tuple(range(16))
    c = tuple((i,) for i in range(16))
    assert _member(stream, "layer1.2.bn2").indices == c
    assert _member(stream, "layer2.0.conv1", "consumer").indices == c
    plus8 = tuple((i + 8,) for i in range(16))  # stage-2 shortcut pads 8 channels in front
    for name in ("layer2.0.conv2", "layer2.0.bn2", "layer2.2.bn2"):
        assert _member(stream, name).indices == plus8
    assert _member(stream, "layer3.0.conv1", "consumer").indices == plus8
    plus24 = tuple((i + 8 + 16,) for i in range(16))  # then 16 more in front of stage 3
    for name in ("layer3.0.conv2", "layer3.2.bn2"):
        assert _member(stream, name).indices == plus24
    assert _member(stream, "linear", "consumer").indices == plus24


def test_resnet20_padded_channels_form_their_own_groups(zoo_case):
    groups = {g.name: g for g in zoo_case("cifar-resnet20").groups}
    stage2 = groups["layer2.0.conv2"]
    padded2 = tuple(range(8)) + tuple(range(24, 32))
    assert stage2.root_indices == padded2
    assert not any(m.module.startswith("layer1") or m.module == "conv1" for m in stage2.members)
    assert _member(stage2, "layer3.1.conv2").indices == tuple((i + 16,) for i in padded2)
    stage3 = groups["layer3.0.conv2"]
    assert stage3.root_indices == tuple(range(16)) + tuple(range(48, 64))
    assert {m.module for m in stage3.members} >= {"layer3.2.bn2", "linear"}
    assert not any(m.module.startswith(("layer1", "layer2")) for m in stage3.members)
    assert len(groups) == 1 + 9 + 2  # stream, one inner group per block, two padded groups
    assert "linear" not in groups  # the logits are never pruned


def test_shortcut_pruner_renumbers_positions():
    shortcut = PadShortcut(4, 8, stride=1)  # positions [2, 3, 4, 5]
    PadShortcutPruner().prune_out_channels(shortcut, [0, 3, 7])
    # output 3 held input channel 1, which goes; outputs 1, 2, 4, 5, 6 stay and are renumbered
    assert shortcut.positions == [1, 2, 3]
    assert shortcut.out_channels == 5 and shortcut.in_channels == 3
    x = torch.randn(1, 3, 2, 2)
    out = shortcut(x)
    assert out.shape == (1, 5, 2, 2)
    assert torch.equal(out[:, [1, 2, 3]], x) and not out[:, [0, 4]].any()


def test_shortcut_maps_survive_torch_pruning_rewriting_its_slots(zoo_case):
    case = zoo_case("cifar-resnet20")
    traced = trace_model(case.model, case.example)
    shortcut = case.model.layer2[0].shortcut
    node = traced.graph.module2node[shortcut]
    edges = [d for n in node.inputs for d in n.dependencies if d.target is node]
    edges += [d for d in node.dependencies if d.target in node.inputs]
    assert len(edges) == 2
    for dep in edges:  # what update_index_mapping does to a concat/split/reshape neighbour
        dep.index_mapping[0] = lambda idxs: list(idxs)
    group = traced.graph.get_pruning_group(
        case.model.conv1, traced.pruner(case.model.conv1).prune_out_channels, [0, 5]
    )
    reached = {
        traced.layer_names[item.dep.target]: sorted(item.idxs)
        for item in group
        if item.dep.target in traced.layer_names
    }
    assert reached["layer2.1.conv2"] == [8, 13] and reached["layer3.1.conv2"] == [24, 29]


class ConcatIntoShortcut(nn.Module):
    """Two convs concatenated into a widening shortcut: offsets from cat and shortcut compose."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.shortcut = PadShortcut(16, 32, stride=2)
        self.branch = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(32)
        self.mix = nn.Conv2d(32, 8, 1)
        self.head = nn.Linear(8 * 4 * 4, 3)

    def forward(self, x):
        h = F.relu(torch.cat([self.a(x), self.b(x)], 1))
        y = F.relu(self.bn(self.branch(h)) + self.shortcut(h))
        return self.head(F.relu(self.mix(y)).flatten(1))


def test_concat_into_shortcut_groups_and_surgery():
    with torch.random.fork_rng():  # seeded weights without touching the global generator
        torch.manual_seed(0)
        model = ConcatIntoShortcut().eval()
    with torch.no_grad():
        model.bn.bias.uniform_(-1, 1)
        model.bn.running_mean.uniform_(-1, 1)
    x = torch.randn(2, 3, 8, 8)
    groups = {g.name: g for g in find_channel_groups(model, x)}
    assert _member(groups["a"], "branch", "consumer").indices == tuple((i,) for i in range(8))
    assert _member(groups["a"], "bn").indices == tuple((i + 8,) for i in range(8))
    assert _member(groups["b"], "mix", "consumer").indices == tuple((i + 16,) for i in range(8))
    assert groups["branch"].root_indices == tuple(range(8)) + tuple(range(24, 32))
    assert _member(groups["mix"], "head", "consumer").indices[1] == tuple(range(16, 32))
    plan = PrunePlan({"a": (1, 6), "b": (0,), "branch": (0, 9, 15), "mix": (2, 3)})
    pruned = prune_model(model, list(groups.values()), plan, x)
    assert max_abs_difference(model, pruned, list(groups.values()), plan, x) <= TOLERANCE
    # stream outputs 9, 14, 16 and padded outputs 0, 25, 31 are gone; the rest close up
    assert pruned.shortcut.positions == list(range(7, 20)) and pruned.shortcut.out_channels == 26


def _conv_and_linear_macs(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.weight[0].numel()  # in_channels/groups * kh * kw
            total += output[0].numel() * per_output
        else:
            total += module.in_features * module.out_features

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(x[:1])
    for h in hooks:
        h.remove()
    return total


def test_resnet56_at_ratio_point_three_keeps_at_most_sixty_percent_of_macs(zoo_case):
    case = zoo_case("cifar-resnet56")
    plan = random_plan(case.groups, 0.3, seed=11)
    pruned = prune_model(case.model, case.groups, plan, case.example)
    # the residual stream shrinks in every stage, not only the inner block convs
    stream = [pruned.conv1, pruned.layer2[8].conv2, pruned.layer3[8].conv2]
    assert [conv.out_channels for conv in stream] == [11, 11 + 11, 22 + 22]
    dense = _conv_and_linear_macs(case.model, case.example)
    assert _conv_and_linear_macs(pruned, case.example) / dense <= 0.6


CHECKPOINT = Path(os.environ.get(
    "PRUNE_CIFAR10_DIR", Path(__file__).resolve().parents[3] / "shared/data/cifar10")) / "resnet56.th"  # ../shared beside the repo


@pytest.mark.skipif(not CHECKPOINT.is_file(), reason=f"pretrained checkpoint {CHECKPOINT} is absent")
def test_pretrained_resnet56_checkpoint_prunes_exactly():
    model = build_model("cifar-resnet56").model
    load_weights(model, CHECKPOINT)  # weights_only=True, 'module.' prefix stripped
    model.eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    groups = find_channel_groups(model, x)
    assert len(groups) == 1 + 27 + 2
    plan = random_plan(groups, 0.3, seed=2)
    pruned = prune_model(model, groups, plan, x)
    assert max_abs_difference(model, pruned, groups, plan, x) <= TOLERANCE
    assert check_pruned_sizes(model, pruned, groups, plan).ok
