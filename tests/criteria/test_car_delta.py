"""CAR's consumer-delta path (``pytest_prune.criteria._consumer_delta``): where it applies it gives
the reference's accuracy counts and plans, and its losses up to float rounding; where its
conditions fail (a non-zero-preserving activation, a consumer run twice, a consumer that is the
last layer) it is refused and the exact path gives the reference's numbers (up to a batch's
rounding: ``car_equality``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_prune.criteria import _consumer_delta
from pytest_prune.criteria.car import CAR, CarScorer, car_index
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups

from car_equality import DELTA_ATOL, assert_same_counts_close_losses
from test_car_fast import _residual_net


def _same_counts_close_losses(a, b, groups) -> None:
    assert_same_counts_close_losses(a, b, [g.name for g in groups], DELTA_ATOL)


def _runs_spied(monkeypatch) -> list[str]:
    used: list[str] = []
    original = _consumer_delta.ConsumerDelta.run

    def spy(self, i, chosen):
        used.append(self.group.name)
        return original(self, i, chosen)

    monkeypatch.setattr(_consumer_delta.ConsumerDelta, "run", spy)
    return used


def test_the_delta_path_scores_the_tiny_net_as_the_reference_does(tiny, monkeypatch):
    used = _runs_spied(monkeypatch)
    removed = PrunePlan({"conv1": (4,)})
    candidates = {g.name: [c for c in range(g.size) if (g.name, c) != ("conv1", 4)] for g in tiny.groups}
    fast = car_index(tiny.model, tiny.groups, tiny.batches, removed=removed, candidates=candidates, copies=4)
    ref = car_index(tiny.model, tiny.groups, tiny.batches, fast=False, removed=removed, candidates=candidates)
    _same_counts_close_losses(fast, ref, tiny.groups)
    # conv1, read by conv2; conv2 is read by the head, the last layer: nothing after it to replay,
    # and its exact path is already short
    assert set(used) == {"conv1"}
    assert any(float(ref.accuracy_drop[g.name].nan_to_num().abs().max()) > 0 for g in tiny.groups)


def test_greedy_plans_are_the_references_under_the_delta_path(tiny):
    ctx = tiny.context()
    for allocation in ("layerwise", "global"):
        assert CAR(delta=True).plan(ctx, 0.4, allocation) == CAR(fast=False).plan(ctx, 0.4, allocation), allocation


def test_a_residual_net_uses_the_delta_for_inner_channels_only(monkeypatch):
    used = _runs_spied(monkeypatch)
    model, groups, batches = _residual_net()
    candidates = {g.name: list(range(0, g.size, 3)) for g in groups}
    fast = car_index(model, groups, batches, candidates=candidates, copies=4)
    ref = car_index(model, groups, batches, fast=False, candidates=candidates)
    _same_counts_close_losses(fast, ref, groups)
    inner = {g.name for g in groups if len(g.consumers()) == 1 and g.consumers()[0].module != "linear"}
    assert inner and set(used) == inner  # a residual stream has several consumers: exact path


class _Gated(nn.Module):
    """conv1 → ``between`` → conv2 → pool → linear; ``twice`` runs conv2 on two inputs."""

    def __init__(self, between, twice: bool = False):
        super().__init__()
        torch.manual_seed(5)
        self.conv1, self.conv2 = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1)
        self.head = nn.Linear(6, 4)
        self.between, self.twice = between, twice

    def forward(self, x):
        h = self.between(self.conv1(x))
        y = self.conv2(h)
        if self.twice:
            y = y + self.conv2(h.flip(3))
        return self.head(F.relu(y).mean(dim=(2, 3)))


@pytest.mark.parametrize("case", ["sigmoid", "twice"])
def test_the_delta_is_refused_where_it_would_be_wrong_and_the_exact_path_answers(case):
    between = torch.sigmoid if case == "sigmoid" else F.relu
    model = _Gated(between, twice=case == "twice").eval()
    gen = torch.Generator().manual_seed(6)
    batches = [(torch.randn(16, 3, 8, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen))]
    groups = find_channel_groups(model, batches[0][0][:2])
    conv1 = next(g for g in groups if g.root == "conv1")
    scorer = CarScorer(model, groups, batches)
    fast = scorer.index(candidates={conv1.name: list(range(conv1.size))})
    ref = car_index(model, groups, batches, fast=False, candidates={conv1.name: list(range(conv1.size))})
    assert_same_counts_close_losses(fast, ref, [conv1.name])  # the exact path's tolerance, not the delta's
    if len(conv1.consumers()) == 1:  # a structurally eligible group, refused by the check
        assert conv1.name in scorer._deltas._exact


def test_the_check_accepts_a_plain_relu_stack():
    model = _Gated(F.relu).eval()
    gen = torch.Generator().manual_seed(6)
    batches = [(torch.randn(16, 3, 8, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen))]
    groups = find_channel_groups(model, batches[0][0][:2])
    conv1 = next(g for g in groups if g.root == "conv1")
    scorer = CarScorer(model, groups, batches)
    scorer.index(candidates={conv1.name: [0, 1]})
    assert conv1.name not in scorer._deltas._exact and scorer._deltas._current is not None


def test_the_exact_path_stays_exact_with_as_many_copies_as_its_stack_allows(monkeypatch):
    """Without ``copies``, cheap passes stack more candidates (up to 64): the replay still equals
    the reference, up to a batch's rounding (``car_equality``)."""
    from pytest_prune.criteria import _prefix_cache as delta_module

    monkeypatch.setattr(delta_module, "STACK_ELEMENTS", 1 << 30)  # every group at the 64-copy cap
    model, groups, batches = _residual_net()
    candidates = {g.name: list(range(g.size)) for g in groups}
    scorer = CarScorer(model, groups, batches, delta=False)
    stacked = scorer.index(candidates=candidates)
    ref = car_index(model, groups, batches, fast=False, candidates=candidates)
    assert delta_module.stack_copies(scorer._cache[0], scorer.copies) == delta_module.MAX_COPIES
    assert_same_counts_close_losses(stacked, ref, [g.name for g in groups])
