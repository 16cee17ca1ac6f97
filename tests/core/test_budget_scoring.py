"""A run scores a one-shot criterion once: for a budget the fraction search and the plan share its
scores, and every target of the run shares them (iterative and greedy criteria re-score as their plan does)."""

from __future__ import annotations

import pytest

from pytest_prune.criteria.magnitude import L1Norm
from pytest_prune.pipeline.budget import parse_budget
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings
from pytest_prune.plan import plan_from_scores


@pytest.fixture(scope="module")
def run():
    return PruneRun(RunSettings(model="lenet5", allocation="layerwise"))  # the layerwise fraction search


def test_a_one_shot_criterion_is_scored_once_for_a_budget(run, monkeypatch):
    calls = []
    original = L1Norm.scores
    monkeypatch.setattr(L1Norm, "scores", lambda self, ctx: calls.append(1) or original(self, ctx))
    budget = parse_budget("macs:0.6")
    shot = run.one_shot("l1", budget)
    assert len(calls) == 1
    # the plan is the ranking of those scores at the fraction found
    ctx = run._scoring_context(L1Norm())
    assert shot.plan == plan_from_scores(run.groups, original(L1Norm(), ctx), shot.ratio, "layerwise")


def test_a_run_scores_a_one_shot_criterion_once_for_all_its_targets(monkeypatch):
    """recon-0.3, recon-0.5 and recon at macs:0.6 share one scoring pass, and each plan is the one
    the criterion makes on its own (a fresh context, scored anew)."""
    from pytest_prune.criteria.recon import Reconstruction
    from pytest_prune.pipeline.budget import PlanCost, plan_for_budget

    run = PruneRun(RunSettings(model="lenet5"))
    calls = []
    original = Reconstruction.scores
    monkeypatch.setattr(Reconstruction, "scores", lambda self, ctx: calls.append(1) or original(self, ctx))
    shots = {label: run.one_shot("recon", target) for label, target in
             (("0.3", 0.3), ("0.5", 0.5), ("macs", parse_budget("macs:0.6")))}
    assert len(calls) == 1
    assert shots["0.5"].score_seconds < shots["0.3"].score_seconds  # the first target paid for it

    fresh = PruneRun(RunSettings(model="lenet5"))
    ctx = fresh._scoring_context(Reconstruction())
    ctx.kept_scores = None  # the criterion on its own: scored at every plan
    allocation = run.allocation_for("recon", 0.3)
    assert allocation == "global"  # recon's natural allocation: the cached scores rank across groups
    for ratio in (0.3, 0.5):
        assert shots[str(ratio)].plan == Reconstruction().plan(ctx, ratio, allocation)
        assert shots[str(ratio)].plan.count() > 0
    cost = PlanCost(fresh.info.model, fresh.groups, fresh.dense_count)
    plan, _ = plan_for_budget(Reconstruction(), ctx, parse_budget("macs:0.6"), cost, run.allocation_for("recon", "macs0.6"))
    assert shots["macs"].plan == plan
    assert len(calls) == 1 + 3  # the fresh plans scored anew, the run did not


def test_an_iterative_criterion_rescores_each_round_but_shares_its_first(monkeypatch):
    """taylor re-scores between rounds with the earlier removals masked, so only its first round (the
    unpruned model: the one-shot scores) is shared by the run's targets; the plans are the
    criterion's own, scored anew."""
    from pytest_prune.criteria import taylor
    from pytest_prune.criteria.taylor import TaylorGuided

    calls = []
    original = taylor.taylor_scores
    monkeypatch.setattr(taylor, "taylor_scores", lambda ctx, variant="positive": calls.append(1) or original(ctx, variant))
    run = PruneRun(RunSettings(model="lenet5"))
    plans = [run.one_shot("taylor", ratio).plan for ratio in (0.3, 0.5)]
    in_run = len(calls)
    ctx = PruneRun(RunSettings(model="lenet5"))._scoring_context(TaylorGuided())
    ctx.kept_scores = None  # the criterion on its own: every round scored
    del calls[:]
    alone = [TaylorGuided().plan(ctx, ratio, "global") for ratio in (0.3, 0.5)]
    assert plans == alone and all(p.count() > 0 for p in plans)
    assert len(calls) == 8  # 4 rounds at each target
    assert in_run == 7  # the second target's first round came from the kept scores
