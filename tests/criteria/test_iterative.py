"""Iterative criteria: the schedule, the re-estimation under masking, and the final counts."""

from __future__ import annotations

import pytest
import torch

from pytest_prune.criteria._iterative import iterative_plan
from pytest_prune.errors import SpecError
from pytest_prune.criteria.taylor import TaylorGuided, taylor_scores
from pytest_prune.masking import channels_masked
from pytest_prune.plan import PrunePlan, plan_from_scores, removal_count


def test_one_round_of_taylor_is_the_one_shot_ranking(tiny):
    ctx = tiny.context()
    for allocation in ("layerwise", "global"):
        one_round = TaylorGuided(steps=1).plan(ctx, 0.5, allocation)
        one_shot = plan_from_scores(ctx.groups, TaylorGuided().scores(ctx), 0.5, allocation)
        assert one_round == one_shot


def test_masked_channels_score_zero_when_re_estimated(tiny):
    ctx = tiny.context()
    plan = PrunePlan({"conv1": (1, 4), "conv2": (0,)})
    with channels_masked(ctx.model, ctx.groups, plan):
        for variant in ("positive", "plain"):
            scores = taylor_scores(ctx, variant)
            assert scores["conv1"][[1, 4]].abs().sum() == 0 and scores["conv2"][0] == 0
            assert scores["conv1"][[0, 2, 3]].min() > 0


def test_iterative_taylor_reaches_the_allocation_counts(tiny):
    ctx = tiny.context()
    layerwise = TaylorGuided(steps=3).plan(ctx, 0.5, "layerwise")
    assert {g.name: len(layerwise.remove[g.name]) for g in ctx.groups} == {
        g.name: removal_count(g.size, 0.5) for g in ctx.groups
    }
    glob = TaylorGuided(steps=3).plan(ctx, 0.5, "global")
    assert glob.count() == 10


def test_schedule_re_scores_with_the_removals_so_far():
    """A fake scorer that records what it was shown: each round sees the plan so far, removed
    channels are never chosen again, and the rounds add up to the target."""
    from pytest_prune.groups import ChannelGroup

    groups = [ChannelGroup("a", "a", tuple(range(8)), ()), ChannelGroup("b", "b", tuple(range(4)), ())]
    seen = []

    def rescore(plan: PrunePlan):
        seen.append({k: tuple(v) for k, v in plan.remove.items()})
        # prefer high positions in 'a', low in 'b'; removed ones would be cheapest if not masked
        return {"a": -torch.arange(8.0), "b": torch.arange(4.0)}

    plan = iterative_plan(groups, 0.5, "layerwise", rescore, steps=4)
    assert plan.remove == {"a": (4, 5, 6, 7), "b": (0, 1)}
    assert [len(s.get("a", ())) for s in seen] == [0, 1, 2, 3]
    assert seen[0] == {"a": (), "b": ()}


def test_unknown_variant_is_refused(tiny):
    with pytest.raises(SpecError, match="variant"):
        taylor_scores(tiny.context(), "negative")  # type: ignore[arg-type]
