"""CAR's nested greedy schedule: one sequence serves every ratio, reused only while valid."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from pytest_prune.criteria import _iterative
from pytest_prune.criteria._iterative import NestedGreedy, grid_round
from pytest_prune.criteria._prefix_cache import PrefixCache
from pytest_prune.criteria.car import CAR, CarScorer, car_index
from pytest_prune.errors import SpecError
from pytest_prune.groups import ChannelGroup
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups

from car_equality import REPLAY_ATOL, assert_same_counts_close_losses

RATIOS = (0.25, 0.4, 0.6)


def car(**settings) -> CAR:
    """CAR on 64 calibration samples and a grid of 8 rounds per unit ratio: the same code paths
    as the defaults, at a cost that fits the default test run."""
    return CAR(schedule="nested", max_samples=64, grid=8, **settings)


@pytest.fixture(autouse=True)
def cold_cache():
    """Every test starts without stored sequences (and leaves none to the others)."""
    _iterative._SEQUENCES.clear()
    yield
    _iterative._SEQUENCES.clear()


def _count_index_calls(monkeypatch) -> list[int]:
    calls = [0]
    original = CarScorer.index

    def counted(self, *args, **kwargs):
        calls[0] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(CarScorer, "index", counted)
    return calls


def _contained(small: PrunePlan, large: PrunePlan) -> bool:
    return all(set(p) <= set(large.remove.get(name, ())) for name, p in small.remove.items())


def test_grid_round_is_the_first_grid_ratio_at_or_above():
    assert [grid_round(r, 16) for r in (0.0, 0.05, 0.0625, 0.3, 0.5, 0.7)] == [0, 1, 1, 5, 8, 12]
    assert grid_round(0.3, 10) == 3  # 3/10 is the float 0.3: no extra round for rounding


def test_nested_greedy_known_answer_and_prefix():
    """Scores that flip with the parity of what is removed: the greedy must follow the re-scoring
    round by round (grid 8 on 8 channels: one channel a round), and a ratio between grid points
    is its round cut at that ratio."""
    group = ChannelGroup("g", "m", tuple(range(8)), ())
    seen = []

    def rescore(removed: PrunePlan, groups):
        n = len(removed.remove.get("g", ()))
        seen.append(n)
        sign = 1.0 if n % 2 == 0 else -1.0
        return {"g": sign * torch.arange(8, dtype=torch.float64)}

    seq = NestedGreedy([group], "layerwise", 8)
    assert seq.plan(0.375, rescore).remove["g"] == (0, 1, 7)
    assert seen == [0, 1, 2]
    assert seq.plan(0.3, rescore).remove["g"] == (0, 7)  # round 3 cut at 2 channels: no new round
    assert seq.plan(0.5, rescore).remove["g"] == (0, 1, 6, 7)
    assert seen == [0, 1, 2, 3] and seq.rescored == 4
    with pytest.raises(SpecError, match="grid"):
        NestedGreedy([group], "layerwise", 0)


@pytest.mark.parametrize("allocation", ["layerwise", "global"])
def test_shared_sequence_gives_the_from_scratch_plans_and_they_nest(tiny, allocation, monkeypatch):
    """Asked largest first (the later, smaller ratios then score nothing), the shared path gives
    exactly the plans the straightforward path computes for each ratio alone; plans nest."""
    ctx = tiny.context()
    scratch = {r: car(reuse=False).plan(ctx, r, allocation) for r in RATIOS}
    calls = _count_index_calls(monkeypatch)
    shared = {r: car().plan(ctx, r, allocation) for r in reversed(RATIOS)}
    first = calls[0]
    assert first > 0
    assert shared == scratch
    assert calls[0] == first  # 0.4 and 0.25 came out of the rounds 0.6 scored
    for small, large in zip(RATIOS, RATIOS[1:]):
        assert _contained(scratch[small], scratch[large]), (small, large)
    counts = {name: len(p) for name, p in scratch[0.25].remove.items()}
    assert sum(counts.values()) > 0 and sum(len(p) for p in scratch[0.6].remove.values()) > sum(counts.values())


def test_the_fast_scorer_and_the_reference_give_the_same_nested_plans(tiny):
    ctx = tiny.context()
    assert car().plan(ctx, 0.4) == car(fast=False, reuse=False).plan(ctx, 0.4)


def test_changed_weights_or_data_are_scored_afresh(tiny, monkeypatch):
    ctx = tiny.context()
    car().plan(ctx, 0.4)
    calls = _count_index_calls(monkeypatch)
    with torch.no_grad():  # a new release of the weights: the stored order must not serve it
        tiny.model.conv2.weight[:, 3] *= 0.01
    after = car().plan(ctx, 0.4)
    assert calls[0] > 0
    monkeypatch.undo()
    assert after == car(reuse=False).plan(ctx, 0.4)
    calls = _count_index_calls(monkeypatch)
    other_data = tiny.context()
    other_data.batches = [(x.flip(-1), y) for x, y in tiny.batches]
    car().plan(other_data, 0.4)
    assert calls[0] > 0


def test_schedule_settings_are_checked_and_the_default_keeps_its_choice():
    """The nested schedule chooses other channels: opt-in, never the default."""
    with pytest.raises(SpecError, match="schedule"):
        CAR(schedule="fastest")
    assert CAR().schedule == "per-ratio" and CAR(schedule="nested").schedule == "nested"


class FunctionalCNN(nn.Module):
    """The shape of issue 16's CNN, scaled down: activations and pooling are functional calls
    between the modules, which only a function-level replay can skip."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.fc1 = nn.Linear(6 * 4 * 4, 10)
        self.fc2 = nn.Linear(10, 3)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class _CountPooling(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.pools = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.pools += getattr(func, "__name__", "") == "max_pool2d"
        return func(*args, **(kwargs or {}))


@pytest.fixture
def functional():
    torch.manual_seed(5)
    model = FunctionalCNN().eval()
    gen = torch.Generator().manual_seed(6)
    batches = [(torch.randn(10, 3, 16, 16, generator=gen), torch.randint(0, 3, (10,), generator=gen)) for _ in range(2)]
    return model, find_channel_groups(model, batches[0][0][:2]), batches


def test_function_level_replay_is_exact_on_a_functional_cnn(functional):
    model, groups, batches = functional
    removed = PrunePlan({"conv1": (2,)})
    candidates = {g.name: [c for c in range(g.size) if c not in removed.remove.get(g.name, ())] for g in groups}
    fast = car_index(model, groups, batches, fast=True, removed=removed, candidates=candidates, copies=3)
    ref = car_index(model, groups, batches, fast=False, removed=removed, candidates=candidates)
    assert_same_counts_close_losses(fast, ref, [g.name for g in groups])
    assert float(fast.loss_increase["fc1"].nan_to_num().abs().max()) > 0


def test_function_level_replay_skips_the_pooling_before_the_producer(functional):
    model, _, batches = functional
    x = batches[0][0]
    with torch.no_grad():
        full = model(x)
        cache = PrefixCache(model, {"fc1"}, x)
        with _CountPooling() as counter:
            stacked = cache.run(x.repeat(2, 1, 1, 1), copies=2)
    assert counter.pools == 0  # both poolings come from the cache
    assert torch.allclose(stacked, full.repeat(2, 1), rtol=0, atol=REPLAY_ATOL)  # a batch's rounding
    with torch.no_grad():
        modules_only = PrefixCache(model, {"fc1"}, x, functions=False)
        with _CountPooling() as counter:  # module calls only: both poolings run again
            assert torch.equal(modules_only.run(x), full)
    assert counter.pools == 2
    with torch.no_grad(), _CountPooling() as counter:  # behind conv2 the second pooling must run
        PrefixCache(model, {"conv2"}, x).run(x)
    assert counter.pools >= 1
