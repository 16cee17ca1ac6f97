"""Same seed, same data → identical scores and identical plans, for every criterion."""

from __future__ import annotations

import pytest
import torch

from pytest_prune.criteria import get_criterion, known_criteria


@pytest.mark.parametrize("name", known_criteria())
def test_scores_and_plans_repeat_exactly(tiny, name):
    ctx = tiny.context(seed=4)
    ctx.batches = ctx.batches[:1]  # 64 samples: enough to show any nondeterminism
    if name == "attribution-corr":
        x, y = ctx.batches[0]
        ctx.batches = [(x[:16], y[:16])]  # integrated gradients are the expensive part
    runs = []
    for _ in range(2):
        crit = get_criterion(name)
        scores = crit.scores(ctx)
        plans = [crit.plan(ctx, 0.25, allocation) for allocation in ("layerwise", "global")]
        runs.append((scores, plans))
    (s1, p1), (s2, p2) = runs
    assert s1.keys() == s2.keys() == {g.name for g in tiny.groups}
    for key in s1:
        assert s1[key].shape == (next(g.size for g in tiny.groups if g.name == key),)
        assert torch.equal(s1[key], s2[key]), key
    assert p1 == p2
    assert p1[0].count() == 5  # 3 of conv1's 12, 2 of conv2's 8


@pytest.mark.parametrize("name", ["random", "meanvar"])
def test_seeded_criteria_depend_on_the_seed_only(tiny, name):
    a = get_criterion(name).scores(tiny.context(seed=1))
    b = get_criterion(name).scores(tiny.context(seed=1))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_attribution_corr_scores_linear_hidden_units_by_layer_mode():
    """LeNet-5's hidden linear units have no spatial map to correlate: they get layer-mode scores."""
    from pytest_prune.criteria import ScoringContext, get_criterion
    from pytest_prune.models import build_model
    from pytest_prune.surgery import find_channel_groups

    info = build_model("lenet5")
    x = info.example_input(8)
    groups = find_channel_groups(info.model, x)
    batches = [(x, torch.arange(8) % 10)]
    ctx = ScoringContext(info.model, groups, batches, seed=0)
    corr = get_criterion("attribution-corr").scores(ctx)
    layer = get_criterion("attribution").scores(ctx)
    assert set(corr) == {g.name for g in groups}
    linear = [g.name for g in groups if g.root.startswith("classifier")]
    assert linear and all(torch.equal(corr[n], layer[n]) for n in linear)
    conv = [g.name for g in groups if g.root.startswith("features")]
    assert all(not torch.equal(corr[n], layer[n]) for n in conv)
