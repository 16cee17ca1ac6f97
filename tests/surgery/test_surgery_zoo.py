"""Property: on every zoo model, the pruned model is the masked dense model, with the predicted sizes.

Random weights, BatchNorms with random affine parameters and data-estimated statistics, small
inputs where the architecture allows (one forward at 64x64 keeps densenet121 and vgg16_bn cheap).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from surgery_cases import TOLERANCE, keep_one_plan, random_plan
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_prune.equivalence import check_pruned_sizes, max_abs_difference
from pytest_prune.groups import is_conv_or_linear
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import prune_model

ZOO = [
    ("lenet5", None),
    ("cifar-resnet20", None),
    ("cifar-resnet32", None),
    ("cifar-resnet44", None),
    ("cifar-resnet56", None),
    ("cifar-resnet110", None),
    ("torchvision:resnet18", 64),
    ("torchvision:vgg16_bn", 64),
    ("torchvision:densenet121", 64),
    ("torchvision:alexnet", 64),
    ("torchvision:mobilenet_v2", 64),
]
CHEAP = {"lenet5", "cifar-resnet20", "cifar-resnet56", "torchvision:mobilenet_v2"}
IDS = [spec for spec, _ in ZOO]


def _assert_pruned_equals_masked(case, plan):
    pruned = prune_model(case.model, case.groups, plan, case.example)
    diff = max_abs_difference(case.model, pruned, case.groups, plan, case.example)
    with torch.no_grad():  # float32 round-off grows with the outputs (random deep nets reach 100s)
        scale = max(1.0, float(pruned.eval()(case.example).abs().max()))
    assert diff <= TOLERANCE * scale, f"{case.spec}: pruned differs from masked dense by {diff} (outputs up to {scale:.3g})"
    sizes = check_pruned_sizes(case.model, pruned, case.groups, plan)
    assert sizes.ok, f"{case.spec}: {sizes}"
    assert sizes.pruned_parameters < sizes.dense_parameters
    return pruned


@pytest.mark.parametrize("spec, size", ZOO, ids=IDS)
def test_groups_cover_every_conv_and_linear_channel_once(zoo_case, spec, size):
    case = zoo_case(spec, size)
    seen = Counter()
    for g in case.groups:
        assert g.members[0].module == g.root and g.members[0].role == "producer"
        assert g.members[0].indices == tuple((i,) for i in g.root_indices)
        for member in g.producers():
            assert all(len(idx) == 1 for idx in member.indices)
            if is_conv_or_linear(case.model.get_submodule(member.module)):
                seen.update((member.module, idx[0]) for idx in member.indices)
    assert max(seen.values()) == 1, "a channel is in two groups"
    layers = {n: m for n, m in case.model.named_modules() if is_conv_or_linear(m)}
    uncovered = {
        name
        for name, m in layers.items()
        for c in range(m.weight.shape[0])
        if (name, c) not in seen
    }
    classifier = list(layers)[-1]  # the only layer whose outputs are the model's outputs
    assert uncovered == {classifier}
    assert len({g.name for g in case.groups}) == len(case.groups)


@pytest.mark.parametrize("spec, size", ZOO, ids=IDS)
def test_random_thirty_percent_plan_matches_masked_model(zoo_case, spec, size):
    case = zoo_case(spec, size)
    pruned = _assert_pruned_equals_masked(case, random_plan(case.groups, 0.3, seed=7))
    assert pruned(case.example).shape == case.model(case.example).shape  # no output lost


@pytest.mark.parametrize(
    "spec, size", [z for z in ZOO if z[0] in CHEAP], ids=[s for s in IDS if s in CHEAP]
)
def test_every_group_down_to_one_channel_matches_masked_model(zoo_case, spec, size):
    case = zoo_case(spec, size)
    _assert_pruned_equals_masked(case, keep_one_plan(case.groups, seed=3))


@st.composite
def plans(draw, groups):
    """Any subset of the groups, each losing any proper subset of its channels."""
    remove = {}
    for g in groups:
        if draw(st.booleans()):
            positions = draw(st.sets(st.integers(0, g.size - 1), max_size=g.size - 1))
            remove[g.name] = tuple(sorted(positions))
    return PrunePlan(remove)


@pytest.mark.parametrize("spec", ["lenet5", "cifar-resnet20"])
def test_any_plan_matches_masked_model(zoo_case, spec):
    case = zoo_case(spec)

    @settings(max_examples=8, deadline=None, database=None)
    @given(plan=plans(case.groups))
    def check(plan):
        if plan.count():
            _assert_pruned_equals_masked(case, plan)

    check()


GROUPED = [("torchvision:resnext50_32x4d", 32), ("torchvision:regnet_x_400mf", 32), ("torchvision:regnet_y_400mf", 32)]


@pytest.mark.parametrize("spec, size", GROUPED, ids=[s for s, _ in GROUPED])
def test_grouped_convolutions_lose_the_same_channels_in_every_group(zoo_case, spec, size):
    case = zoo_case(spec, size)
    grouped = {
        name: m for name, m in case.model.named_modules()
        if isinstance(m, torch.nn.Conv2d) and 1 < m.groups < m.out_channels
    }
    reached = 0
    for g in case.groups:
        for member in g.members:
            conv = grouped.get(member.module)
            if conv is None:
                continue
            reached += 1
            width = conv.in_channels if member.role == "consumer" else conv.out_channels
            per_group = width // conv.groups
            for idx in member.indices:  # one channel at the same offset in each group
                assert len(idx) == conv.groups
                assert sorted(i // per_group for i in idx) == list(range(conv.groups))
                assert len({i % per_group for i in idx}) == 1
    assert reached >= len(grouped)  # every grouped conv is reached by some group
    _assert_pruned_equals_masked(case, random_plan(case.groups, 0.3, seed=7))
    _assert_pruned_equals_masked(case, keep_one_plan(case.groups, seed=3))
