"""Known answers: planted channels every criterion must recognise (see conftest for the plants)."""

from __future__ import annotations

import pytest
import torch

from planted_net import COLOUR, DEAD, FREE, ORIGINAL, SIZE, TWIN, TinyNet, tiny_groups
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria.car import car_index
from pytest_prune.criteria.cpmc import CPMC, channel_terms, output_positions
from pytest_prune.criteria.statistics import MeanVariance
from pytest_prune.measure.macs import count_model
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import prune_model

GRADIENT_CRITERIA = ["taylor", "taylor-plain", "attribution"]


@pytest.mark.parametrize("name", ["l1", "meanvar", "cpmc", *GRADIENT_CRITERIA])
def test_dead_channel_ranks_below_every_live_channel(tiny, name):
    scores = get_criterion(name).scores(tiny.context())["conv1"]
    assert scores[DEAD] < scores[FREE].min(), f"{name}: {scores.tolist()}"


def _assert_car_sees_no_change(tiny, dead: int, live: list[int]) -> None:
    """CAR's known answer for a dead channel: removing it changes nothing (index 0, loss change
    exactly 0), so it ranks below every channel whose removal costs accuracy or loss. A live
    channel whose removal *lowers* the calibration loss ranks below it, by design (the tie-break
    prefers removals that help); at most one such channel is tolerated here."""
    index = car_index(tiny.model, tiny.groups, tiny.batches)
    drop, rise = index.accuracy_drop["conv1"], index.loss_increase["conv1"]
    assert drop[dead] == 0.0 and rise[dead] == 0.0
    scores = index.scores()["conv1"]
    harmful = [c for c in live if drop[c] > 0 or rise[c] > 0]
    assert len(harmful) >= len(live) - 1, rise.tolist()
    assert scores[dead] < scores[harmful].min()


def test_car_sees_that_removing_the_dead_channel_changes_nothing(tiny):
    _assert_car_sees_no_change(tiny, DEAD, FREE)


def test_dead_channel_scores_zero_correlation_with_the_attribution_map(tiny):
    """``attribution-corr`` is a signed correlation: a dead (constant) map scores exactly 0, and
    channels anti-correlated with the attribution map may score below it (documented)."""
    ctx = tiny.context()
    ctx.batches = ctx.batches[:1]  # integrated gradients are the expensive part
    scores = get_criterion("attribution-corr").scores(ctx)["conv1"]
    assert scores[DEAD] == 0.0
    assert scores[FREE].abs().max() > 0.01  # the live channels are not all zero


@pytest.mark.parametrize("name", [*GRADIENT_CRITERIA, "car"])
def test_zero_batchnorm_channel_ranks_lowest_for_data_criteria(tiny, name):
    """Zero BatchNorm scale and shift kill a channel whose filter is intact: only criteria that
    look at data see it (l1, meanvar and cpmc read conv weights by design)."""
    victim = 3
    with torch.no_grad():
        tiny.model.bn1.weight[victim] = 0.0
        tiny.model.bn1.bias[victim] = 0.0
    others = [c for c in FREE if c != victim]
    if name == "car":
        _assert_car_sees_no_change(tiny, victim, others)
        return
    scores = get_criterion(name).scores(tiny.context())["conv1"]
    assert scores[victim] == 0.0
    assert scores[victim] < scores[others].min(), f"{name}: {scores.tolist()}"


@pytest.mark.parametrize("name", ["car", "taylor", "taylor-plain", "attribution"])
def test_unused_twin_is_free_and_its_original_is_not(tiny, name):
    """TWIN computes exactly what ORIGINAL computes but nothing reads it: removing it changes
    nothing (CAR 0 with no loss change, zero gradient), removing ORIGINAL loses its feature."""
    scores = get_criterion(name).scores(tiny.context())["conv1"]
    assert scores[TWIN] == scores[DEAD]  # the score of "removing changes nothing"
    assert scores[TWIN] < scores[ORIGINAL]


@pytest.mark.parametrize("name", ["l1", "meanvar"])
def test_weight_criteria_cannot_tell_twins_apart(tiny, name):
    scores = get_criterion(name).scores(tiny.context())["conv1"]
    assert scores[TWIN] == scores[ORIGINAL]


def test_colour_filter_is_colour_only(tiny):
    """The construction behind the next test: the planted filter has no grey component and gives
    the same response to an image and to its grey version plus nothing."""
    w = tiny.model.conv1.weight[COLOUR].detach()
    assert torch.allclose(w.sum(dim=0), torch.zeros_like(w[0]))  # CSI_w = 1
    grey = torch.rand(1, 1, SIZE, SIZE).expand(1, 3, SIZE, SIZE)
    response = torch.nn.functional.conv2d(grey, w[None], padding=1)
    assert response.abs().max() < 1e-6


def test_car_ranks_the_colour_filter_low(tiny):
    """Labels depend on luminance only: CAR (Abbasi-Asl & Yu) should find the colour-only filter
    among the cheapest to remove: no accuracy lost, and among the 3 lowest of the 10 channels
    (9 free + colour)."""
    index = car_index(tiny.model, tiny.groups, tiny.batches)
    assert index.accuracy_drop["conv1"][COLOUR] == 0.0
    scores = index.scores()["conv1"]
    candidates = FREE + [COLOUR]
    order = sorted(candidates, key=lambda c: float(scores[c]))
    assert COLOUR in order[:3], [(c, float(scores[c])) for c in order]


def test_greedy_car_removes_the_planted_channels_first(tiny):
    """A quarter of conv1 (3 of 12): the greedy removes the dead, the unused twin and the colour
    filter, in any order, and none of the free channels."""
    plan = get_criterion("car").plan(tiny.context(), 0.25, "layerwise")
    assert set(plan.remove["conv1"]) == {DEAD, COLOUR, TWIN}


def _random_tiny(seed: int, width1: int = 8, width2: int = 16) -> TinyNet:
    torch.manual_seed(seed)
    model = TinyNet(width1=width1, width2=width2).eval()
    return model


def test_cpmc_ranks_a_large_filter_with_zero_consumers_low_and_l1_ranks_it_high():
    model = _random_tiny(5)
    big = 4
    with torch.no_grad():
        model.conv1.weight[big] *= 3.0
        model.conv2.weight[:, big] = 0.0
    ctx = ScoringContext(model, tiny_groups(model), [(torch.randn(4, 3, SIZE, SIZE), torch.zeros(4, dtype=torch.long))])
    l1 = get_criterion("l1").scores(ctx)["conv1"]
    cpmc = get_criterion("cpmc").scores(ctx)["conv1"]
    assert int(torch.argmax(l1)) == big
    assert int(torch.argmin(cpmc)) == big
    plan = get_criterion("cpmc").plan(ctx, 0.2, "layerwise")
    assert big in plan.remove["conv1"]


def test_cpmc_cost_terms_match_the_macs_counter_and_surgery():
    """f and p of one channel are exactly what removing it takes off the model's MACs and
    parameters (measured with measure.macs on the surgically pruned copy)."""
    model = _random_tiny(6)
    example = torch.zeros(1, 3, SIZE, SIZE)
    groups = tiny_groups(model)
    positions = output_positions(model, groups, example)
    before = count_model(model, example)
    for g in groups:
        terms = channel_terms(model, g, positions)
        pruned = prune_model(model, groups, PrunePlan({g.name: (2,)}), example)
        after = count_model(pruned, example)
        assert terms.macs[2] == before.macs - after.macs
        assert terms.params[2] == before.params - after.params
        assert torch.all(terms.macs == terms.macs[0])  # one layer: one cost per channel


def test_cpmc_is_globally_normalised():
    model = _random_tiny(7)
    ctx = ScoringContext(model, tiny_groups(model), [(torch.randn(2, 3, SIZE, SIZE), torch.zeros(2, dtype=torch.long))])
    crit = CPMC()
    terms = crit.terms(ctx)
    scores = crit.scores(ctx)
    w_max = max(float(t.weight.max()) for t in terms.values())
    f_max = max(float(t.macs.max()) for t in terms.values())
    p_max = max(float(t.params.max()) for t in terms.values())
    for name, t in terms.items():
        expected = (t.weight / w_max) / (1 + t.macs / f_max + t.params / p_max)
        assert torch.allclose(scores[name], expected)


def test_meanvar_puts_exactly_the_planted_low_variance_filters_in_the_weak_cluster():
    model = _random_tiny(8, width1=16)
    planted = (2, 5, 11)
    with torch.no_grad():
        for c in planted:
            model.conv1.weight[c] *= 0.05
    ctx = ScoringContext(model, tiny_groups(model), seed=3)
    crit = MeanVariance()
    group = next(g for g in ctx.groups if g.name == "conv1")
    clusters = crit.clusters_of(ctx, group)
    assert clusters.weak == planted
    assert crit.natural_plan(ctx).remove["conv1"] == planted
    scores = crit.scores(ctx)["conv1"]
    assert set(torch.argsort(scores)[:3].tolist()) == set(planted)


def test_meanvar_natural_plan_keeps_at_least_one_channel_and_needs_no_ratio():
    model = _random_tiny(9)
    ctx = ScoringContext(model, tiny_groups(model))
    plan = MeanVariance().natural_plan(ctx)
    for g in ctx.groups:
        assert 0 < len(plan.kept(g)) <= g.size
