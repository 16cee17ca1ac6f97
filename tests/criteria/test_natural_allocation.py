"""Each criterion's natural allocation is what a run uses when no allocation is given, and what its
baseline settings record; a given allocation overrides it for every criterion."""

import pytest

from pytest_prune.allocations import ALLOCATIONS, GLOBAL_CRITERIA
from pytest_prune.criteria import get_criterion, known_criteria
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings


def test_natural_allocations_are_known_and_the_help_names_the_global_ones():
    natural = {name: get_criterion(name).natural_allocation for name in known_criteria()}
    assert set(natural.values()) <= set(ALLOCATIONS)
    assert {name for name, a in natural.items() if a == "global"} == set(GLOBAL_CRITERIA)


def test_each_criterion_follows_its_paper():
    # CPMC ranks globally (Yan et al.); CAR's greedy pruning is done layer by layer (Abbasi-Asl & Yu)
    assert get_criterion("cpmc").natural_allocation == "global"
    assert get_criterion("car").natural_allocation == "layerwise"
    # unit-free correlations share one ranking with the layer mode's magnitudes on linear groups
    assert get_criterion("attribution-corr").natural_allocation == "layerwise"


@pytest.fixture(scope="module")
def lenet5_runs() -> dict:
    return {a: PruneRun(RunSettings("lenet5", allocation=a)) for a in (None, *ALLOCATIONS)}


def test_without_an_allocation_cpmc_plans_globally(lenet5_runs):
    plans = {a: run.one_shot("cpmc", 0.5).plan.remove for a, run in lenet5_runs.items()}
    assert plans["global"] != plans["layerwise"]  # LeNet-5 tells the two apart
    assert plans[None] == plans["global"]


def test_a_given_allocation_overrides_the_natural_one(lenet5_runs):
    def counts(run, criterion):
        return {group: len(removed) for group, removed in run.one_shot(criterion, 0.5).plan.remove.items()}

    # layer-wise, cpmc loses in each group what l1 (natural: layer-wise) loses there
    assert counts(lenet5_runs["layerwise"], "cpmc") == counts(lenet5_runs[None], "l1")
    assert counts(lenet5_runs["global"], "l1") != counts(lenet5_runs[None], "l1")
    assert lenet5_runs["global"].allocation_for("l1") == "global"
    assert lenet5_runs["layerwise"].allocation_for("cpmc") == "layerwise"


@pytest.mark.parametrize("allocation, criterion, recorded", [
    (None, "cpmc", "global"), (None, "taylor", "global"), (None, "car", "layerwise"),
    (None, "l1", "layerwise"), (None, "tucker", "layerwise"), (None, "candidate", "layerwise"),
    ("layerwise", "cpmc", "layerwise"), ("global", "l1", "global"),
])
def test_the_settings_record_the_allocation_used(allocation, criterion, recorded):
    run = PruneRun(RunSettings("lenet5", allocation=allocation))
    assert run.settings_record("none", criterion)["allocation"] == recorded
