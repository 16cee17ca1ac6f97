"""--prune-round-to N: every pruned group keeps a multiple of N channels (nearest, halves up, never
below N, never zero), the lowest-scored channels still go first, and a budget is still met."""

import pytest
import torch
from torch import nn

from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.errors import SpecError
from pytest_prune.measure import count_model
from pytest_prune.pipeline.budget import BUDGET_TOLERANCE, Budget, PlanCost, plan_at_ratio, plan_for_budget
from pytest_prune.pipeline.settings import RunSettings
from pytest_prune.plan import PrunePlan, lowest, plan_from_scores, round_plan, rounded_kept
from pytest_prune.surgery import find_channel_groups, prune_model


@pytest.mark.parametrize("size, kept, multiple, expected", [
    (64, 45, 8, 48),  # nearest multiple
    (64, 43, 8, 40),
    (64, 44, 8, 48),  # a half rounds up: keep more
    (16, 3, 8, 8),  # never below N
    (6, 2, 8, 6),  # a group of at most N channels is left whole (never rounded to zero)
    (20, 19, 8, 20),  # nearer the whole group than 16: left whole
    (64, 45, 1, 45),  # N = 1: no rounding
])
def test_kept_counts_round_to_the_nearest_multiple(size, kept, multiple, expected):
    assert rounded_kept(size, kept, multiple) == expected


def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 40, 3, padding=1), nn.BatchNorm2d(40), nn.ReLU(),
        nn.Conv2d(40, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.Conv2d(64, 96, 3, padding=1), nn.BatchNorm2d(96), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10),
    ).eval()


@pytest.fixture(scope="module")
def traced():
    model, x = small_cnn(), torch.randn(2, 3, 16, 16)
    groups = find_channel_groups(model, x)
    ctx = ScoringContext(model=model, groups=groups)
    return model, x, groups, ctx


def test_a_rounded_one_shot_plan_removes_the_lowest_scores_at_the_rounded_count(traced):
    _, _, groups, ctx = traced
    scores = get_criterion("l1").scores(ctx)
    plan = round_plan(plan_from_scores(groups, scores, 0.3, "layerwise"), groups, scores, 8)
    # 40, 64, 96 channels at 0.3 keep 28, 45, 67: rounded to 32, 48, 64
    assert {g.size: g.size - len(plan.remove[g.name]) for g in groups} == {40: 32, 64: 48, 96: 64}
    for g in groups:
        assert plan.remove[g.name] == lowest(scores[g.name], len(plan.remove[g.name]))


def test_rounding_of_an_iterative_plan_keeps_back_its_best_scored_removals(traced):
    _, _, groups, ctx = traced
    scores = get_criterion("l1").scores(ctx)
    g = groups[0]  # 40 channels: a plan removing 11 keeps 29, rounded to 32 (3 come back)
    removed = tuple(range(11))
    rounded = round_plan(PrunePlan({g.name: removed}), [g], scores, 8)
    back = set(removed) - set(rounded.remove[g.name])
    assert len(back) == 3
    assert min(scores[g.name][list(back)]) >= max(scores[g.name][list(rounded.remove[g.name])])


def test_a_budget_is_met_with_every_kept_count_a_multiple_of_8(traced):
    model, x, groups, ctx = traced
    criterion = get_criterion("l1")
    cost = PlanCost(model, groups, count_model(model, x))
    plan, _ = plan_for_budget(criterion, ctx, Budget("macs", 0.5), cost, "layerwise", round_to=8)
    kept = {g.name: g.size - len(plan.remove[g.name]) for g in groups}
    assert all(k % 8 == 0 and k > 0 for k in kept.values()), kept
    assert plan.count() > 0
    # met on the pruned model itself, not only on the estimate
    pruned = prune_model(model, groups, plan, x)
    measured = count_model(pruned, x).macs / count_model(model, x).macs
    assert abs(measured - 0.5) <= BUDGET_TOLERANCE, measured
    # and rounding moved the plan: unrounded, some group keeps a count that is no multiple of 8
    free, _ = plan_for_budget(criterion, ctx, Budget("macs", 0.5), cost, "layerwise")
    assert any((g.size - len(free.remove[g.name])) % 8 for g in groups)


def test_a_ratio_target_is_rounded_through_the_run(traced):
    _, _, groups, ctx = traced
    plan = plan_at_ratio(get_criterion("l1"), ctx, 0.3, "layerwise", round_to=16)
    assert all((g.size - len(plan.remove[g.name])) % 16 == 0 for g in groups)


def test_round_to_is_a_setting_of_the_baselines_and_must_be_positive():
    from pytest_prune.pipeline.run import PruneRun

    assert PruneRun(RunSettings("lenet5", round_to=8)).settings_record()["round_to"] == 8
    assert "round_to" not in PruneRun(RunSettings("lenet5")).settings_record()  # old baselines hold
    with pytest.raises(SpecError, match="--prune-round-to 0"):
        RunSettings("lenet5", round_to=0)


def test_a_budget_one_fraction_cannot_reach_is_met_by_stepping_single_groups():
    # four 16-channel groups keep 8 or 16 when rounded to 8: at one fraction for all of them the
    # kept MACs jump from 1.0 to about 0.3, over macs:0.5; stepping single groups reaches it
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 16, 3, padding=1), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(16, 16, 3, padding=1), nn.ReLU()]
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    x = torch.randn(2, 3, 16, 16)
    groups = find_channel_groups(model, x)
    ctx, dense = ScoringContext(model=model, groups=groups), count_model(model, x)
    cost, criterion = PlanCost(model, groups, dense), get_criterion("l1")
    scores = criterion.scores(ctx)
    one_fraction = [cost.kept_fraction(round_plan(plan_from_scores(groups, scores, r / 100), groups, scores, 8), "macs")
                    for r in range(100)]
    assert not any(abs(k - 0.5) <= BUDGET_TOLERANCE for k in one_fraction)
    plan, _ = plan_for_budget(criterion, ctx, Budget("macs", 0.5), cost, "layerwise", round_to=8)
    assert all(g.size - len(plan.remove[g.name]) in (8, 16) for g in groups)
    measured = count_model(prune_model(model, groups, plan, x), x).macs / dense.macs
    assert abs(measured - 0.5) <= BUDGET_TOLERANCE, measured
