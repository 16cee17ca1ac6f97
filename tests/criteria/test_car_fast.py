"""The fast CAR paths equal the reference: the prefix replay (stacked per-sample masks) up to the
rounding a batch's size can bring (bit for bit where the CPU's kernels are batch-invariant:
``car_equality``), the consumer delta up to float rounding, with the same plans."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pytest_prune.criteria.car import CAR, CarScorer, car_index, car_scores, car_scores_reference
from pytest_prune.criteria._prefix_cache import PrefixCache
from pytest_prune.models.cifar_resnet import CifarResNet
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups

from car_equality import REPLAY_ATOL, assert_close_losses, assert_same_counts_close_losses


def _residual_net() -> tuple[nn.Module, list, list]:
    """A CIFAR ResNet with one block per stage (option-A shortcuts), random but non-trivial BN,
    on 16x16 inputs: small enough to run the reference on every candidate."""
    torch.manual_seed(11)
    model = CifarResNet((1, 1, 1), num_classes=10).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
    gen = torch.Generator().manual_seed(12)
    batches = [(torch.randn(12, 3, 16, 16, generator=gen), torch.randint(0, 10, (12,), generator=gen)) for _ in range(2)]
    groups = find_channel_groups(model, batches[0][0][:2])
    return model, groups, batches


@pytest.fixture(scope="module")
def residual():
    return _residual_net()


def test_fast_and_reference_scores_are_identical_on_the_tiny_net(tiny):
    fast = car_scores(tiny.model, tiny.groups, tiny.batches, fast=True, copies=5, delta=False)
    ref = car_scores_reference(tiny.model, tiny.groups, tiny.batches)
    for g in tiny.groups:
        assert_close_losses(fast[g.name], ref[g.name], g.name)


def test_fast_and_reference_are_identical_on_a_residual_net(residual):
    """Every group of a ResNet (residual streams spanning stages through the option-A shortcut,
    inner block channels), the first channels of each, with another group's removal in place."""
    model, groups, batches = residual
    candidates = {g.name: list(range(0, g.size, 3)) for g in groups}
    removed = PrunePlan({groups[-1].name: (1,)})
    candidates[groups[-1].name] = [c for c in candidates[groups[-1].name] if c != 1]
    fast = car_index(model, groups, batches, fast=True, removed=removed, candidates=candidates, copies=4, delta=False)
    ref = car_index(model, groups, batches, fast=False, removed=removed, candidates=candidates)
    # NaN marks channels that were not candidates, the same in both
    assert_same_counts_close_losses(fast, ref, [g.name for g in groups])
    # the scores are not trivially equal: removals do change the loss
    assert any(float(fast.loss_increase[g.name].nan_to_num(0).abs().max()) > 0 for g in groups)


def test_greedy_plans_are_identical_fast_and_reference(tiny):
    ctx = tiny.context()
    for allocation in ("layerwise", "global"):
        fast = CAR(fast=True).plan(ctx, 0.25, allocation)
        ref = CAR(fast=False).plan(ctx, 0.25, allocation)
        assert fast == ref, allocation


def test_prefix_replay_reproduces_the_forward_pass(residual):
    model, _, batches = residual
    x = batches[0][0]
    with torch.no_grad():
        full = model(x)
        cache = PrefixCache(model, {"layer3.0.conv1", "layer3.0.bn1"}, x)
        assert cache.reached
        # layer1 finished before the cut: replayed whole, not entered; the producers are replayed
        assert "layer1" in cache.replay_plan and "layer1.0.conv1" not in cache.replay_plan
        assert {"layer3.0.conv1", "layer3.0.bn1"} <= set(cache.replay_plan)
        assert "layer3.0.conv2" not in cache.replay_plan  # the consumer: where the cut is
        assert torch.equal(cache.run(x), full)
        stacked = cache.run(x.repeat(3, 1, 1, 1), copies=3)
    assert torch.allclose(stacked, full.repeat(3, 1), rtol=0, atol=REPLAY_ATOL)  # a batch's rounding
    assert "forward" not in model.layer1.__dict__  # stubs removed


def test_prefix_replay_skips_the_prefix_work(residual):
    model, _, batches = residual
    x = batches[0][0]
    calls = []
    handle = model.layer1[0].conv1.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            cache = PrefixCache(model, {"layer3.0.conv1", "layer3.0.bn1"}, x)
            calls.clear()
            cache.run(x)
    finally:
        handle.remove()
    assert calls == []


def test_scorer_keeps_the_model_unchanged(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    tiny.model.train()
    CarScorer(tiny.model, tiny.groups, tiny.batches).index(PrunePlan({"conv1": (1, 2)}))
    assert tiny.model.training and tiny.model.bn1.training
    for k, v in tiny.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_car_plan_counts_follow_the_allocation(tiny):
    ctx = tiny.context()
    layerwise = CAR(per_step=3).plan(ctx, 0.25, "layerwise")
    assert {k: len(v) for k, v in layerwise.remove.items()} == {"conv1": 3, "conv2": 2}
    glob = CAR(per_step=3).plan(ctx, 0.25, "global")
    assert glob.count() == 5


def test_calibration_subset_is_respected(tiny):
    small = CAR(max_samples=70).scorer(tiny.context())
    assert sum(len(y) for _, y in small.batches) == 70


def test_replay_survives_in_place_operations_and_containers_holding_producers():
    """A producer inside a container that finishes before the cut, followed by an in-place add:
    the container must be entered (so the mask reaches the producer) and the stored output must
    be the value before the in-place add."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4))
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            out = self.stem(x)
            out += 1.0  # in place on the producer's output
            out = torch.relu(self.conv(out))
            return self.head(out.mean(dim=(2, 3)))

    torch.manual_seed(3)
    model = Net().eval()
    groups = find_channel_groups(model, torch.zeros(2, 3, 8, 8))
    gen = torch.Generator().manual_seed(4)
    batches = [(torch.randn(5, 3, 8, 8, generator=gen), torch.randint(0, 3, (5,), generator=gen))]
    fast = car_index(model, groups, batches, fast=True, copies=3)
    ref = car_index(model, groups, batches, fast=False)
    assert_same_counts_close_losses(fast, ref, [g.name for g in groups])
    cache = PrefixCache(model, {"stem.0", "stem.1"}, batches[0][0])
    assert "stem.0" in cache.replay_plan  # entered, producer replayed with its hooks


def test_a_reused_scorer_stays_exact_as_its_own_group_loses_channels(tiny):
    """Greedy layer-by-layer use: one scorer, the prefix (producers included) cached once, while
    the scored group's own removals grow; every call must equal the reference."""
    fast = CarScorer(tiny.model, tiny.groups, tiny.batches, fast=True, copies=4, delta=False)
    ref = CarScorer(tiny.model, tiny.groups, tiny.batches, fast=False)
    for removed in ((), (4,), (4, 7), (1, 4, 7)):
        plan = PrunePlan({"conv1": removed})
        candidates = {"conv1": [c for c in range(12) if c not in removed]}
        a, b = fast.index(plan, candidates), ref.index(plan, candidates)
        assert_same_counts_close_losses(a, b, ["conv1"])
