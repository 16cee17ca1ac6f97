"""In budget mode a one-shot criterion is scored once: the fraction search and the plan share its
scores (iterative and greedy criteria re-score at the found fraction, as their plan does)."""

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
