"""The sensitivity analysis (each group alone, masked, on calibration data) and the allocation that
splits a target by it: known answers on planted models, masked == pruned, and bad input."""

from __future__ import annotations

import csv

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pytest_prune.errors import DataError, SpecError
from pytest_prune.measure import count_model
from pytest_prune.pipeline.budget import BUDGET_TOLERANCE, PlanCost, parse_budget
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings
from pytest_prune.plan import PrunePlan, lowest
from pytest_prune.sensitivity import allocate, analyse, write_tables
from pytest_prune.surgery import find_channel_groups, prune_model


def planted(insensitive: str) -> tuple[nn.Module, list, torch.Tensor, list]:
    """fc1 (16→32) → ReLU → fc2 (32→32) → ReLU → fc3 (32→10), labels its own predictions.

    In the ``insensitive`` group (``fc1`` or ``fc2``) the next layer reads channels 0..27 through
    weights 1e-4 times smaller than the rest, so that removing them changes almost nothing; every
    channel of the other group matters. Scores rank channel 0 lowest, so the planted ones go first.
    """
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    reader = model[2] if insensitive == "fc1" else model[4]
    with torch.no_grad():
        model[0].bias.fill_(0.1)
        model[2].bias.fill_(0.1)
        reader.weight[:, :28] *= 1e-4
        reader.weight[:, 28:] *= 4.0
    model.eval()
    x = torch.randn(256, 16)
    with torch.no_grad():
        y = model(x).argmax(1)
    groups = find_channel_groups(model, x[:2])
    scores = {g.name: torch.arange(g.size, dtype=torch.float64) for g in groups}
    return model, groups, scores, [(x, y)]


def _cost(model, groups, x) -> PlanCost:
    return PlanCost(model, groups, count_model(model, x[:2]))


@pytest.mark.parametrize("by", ["top1", "loss"])
@pytest.mark.parametrize("insensitive, fragile", [("0", "2"), ("2", "0")])
def test_the_allocation_prunes_the_insensitive_group_first_and_meets_the_budget(insensitive, fragile, by):
    model, groups, scores, batches = planted("fc1" if insensitive == "0" else "fc2")
    assert sorted(g.name for g in groups) == ["0", "2"]
    cost = _cost(model, groups, batches[0][0])
    table = analyse(model, groups, scores, batches, cost)
    budget = parse_budget("macs:0.7")
    plan = allocate(groups, scores, table, budget, cost, by=by)
    assert len(plan.remove[insensitive]) > 0 and plan.remove[fragile] == ()
    assert abs(cost.kept_fraction(plan, "macs") - 0.7) <= BUDGET_TOLERANCE
    # deterministic: a second analysis and allocation give the same table and plan
    again = analyse(model, groups, scores, batches, cost)
    assert again.points == table.points
    assert allocate(groups, scores, again, budget, cost, by=by) == plan


def test_a_plain_ratio_removes_that_fraction_of_all_channels():
    model, groups, scores, batches = planted("fc1")
    cost = _cost(model, groups, batches[0][0])
    table = analyse(model, groups, scores, batches, cost)
    plan = allocate(groups, scores, table, 0.3, cost)
    assert plan.count() == round(0.3 * 64)
    assert plan.remove["2"] == ()  # the 19 channels all come from the insensitive group
    with pytest.raises(SpecError, match="cap"):
        allocate(groups, scores, table, 0.4, cost, cap=1.0)
    with pytest.raises(SpecError, match="top1 or loss"):
        allocate(groups, scores, table, 0.4, cost, by="accuracy")


def test_the_cap_bounds_every_group():
    model, groups, scores, batches = planted("fc1")
    cost = _cost(model, groups, batches[0][0])
    table = analyse(model, groups, scores, batches, cost)
    plan = allocate(groups, scores, table, parse_budget("macs:0.05"), cost, cap=0.5)
    assert all(len(plan.remove[g.name]) == 16 for g in groups)  # the budget is out of reach


def test_the_table_is_masked_pruning_of_one_group_on_the_calibration_data():
    run = PruneRun(RunSettings("lenet5"))
    model, groups = run.info.model, run.groups
    from pytest_prune.criteria import ScoringContext, get_criterion

    scores = get_criterion("l1").scores(ScoringContext(model, groups))
    cost = PlanCost(model, groups, run.dense_count)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    table = analyse(model, groups, scores, run.calibration, cost, fractions=(0.5,))
    x = torch.cat([b[0] for b in run.calibration])
    y = torch.cat([b[1] for b in run.calibration])
    assert table.images == len(x) and table.passes == 1 + 2 * len(groups)
    for point in table.points:
        plan = PrunePlan({point.group: lowest(scores[point.group], point.removed)})
        pruned = prune_model(model, groups, plan, run.example_input)
        with torch.no_grad():
            logits = pruned(x)
        assert point.loss == pytest.approx(float(F.cross_entropy(logits.double(), y)), abs=1e-5)
        assert point.macs_saved == run.dense_count.macs - count_model(pruned, run.example_input).macs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # left as found


def test_lsq_refits_only_the_groups_consumers_and_recovers_a_duplicated_channel():
    model, groups, _, batches = planted("fc2")
    with torch.no_grad():  # fc1's channel 1 duplicates channel 0: fc2 can read it from there
        model[0].weight[1] = model[0].weight[0]
        model[0].bias[1] = model[0].bias[0]
    scores = {g.name: torch.arange(g.size, dtype=torch.float64) for g in groups}
    cost = _cost(model, groups, batches[0][0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    plain = analyse(model, groups, scores, batches, cost, fractions=(1 / 32,), recovery="none")
    refit = analyse(model, groups, scores, batches, cost, fractions=(1 / 32,), recovery="lsq")
    lost = {p.group: p.loss - plain.dense_loss for p in plain.points}
    kept = {p.group: p.loss - refit.dense_loss for p in refit.points}
    assert lost["0"] > 1e-2 and abs(kept["0"]) < 1e-3 * lost["0"]
    assert refit.passes == plain.passes + 1  # the capture of the dense outputs
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_bad_input_names_the_problem():
    model, groups, scores, batches = planted("fc1")
    cost = _cost(model, groups, batches[0][0])
    with pytest.raises(SpecError, match="none, lsq"):
        analyse(model, groups, scores, batches, cost, recovery="bn")
    with pytest.raises(SpecError, match=r"\(0, 1\)"):
        analyse(model, groups, scores, batches, cost, fractions=(0.5, 1.0))
    with pytest.raises(DataError, match="calibration"):
        analyse(model, groups, scores, [], cost)
    with pytest.raises(SpecError, match="sensitivity-recovery"):
        RunSettings("lenet5", allocation="sensitivity", sensitivity_recovery="bn")


def test_the_tables_are_written_as_csv_and_json(tmp_path):
    model, groups, scores, batches = planted("fc1")
    table = analyse(model, groups, scores, batches, _cost(model, groups, batches[0][0]), criterion="l1")
    paths = write_tables(tmp_path, [table], model="planted")
    assert [p.name for p in paths] == ["sensitivity.csv", "sensitivity.json"]
    rows = list(csv.DictReader(paths[0].open()))
    assert len(rows) == len(table.points) == 8
    assert {r["group"] for r in rows} == {"0", "2"} and rows[0]["model"] == "planted"
    assert write_tables(tmp_path / "none", []) == []


def test_without_an_allocation_budgets_are_split_by_sensitivity_and_fractions_stay_natural():
    """Budgets of layerwise criteria go to sensitivity; criteria ranked across groups stay global."""
    from pytest_prune.pipeline.budget import Budget

    run = PruneRun(RunSettings("lenet5"))
    assert run.allocation_for("l1", Budget("macs", 0.5)) == "sensitivity"
    assert run.allocation_for("random", "params0.6") == "sensitivity"  # a result's target label
    assert run.allocation_for("cpmc", "params0.6") == "global" and run.allocation_for("recon", Budget("macs", 0.5)) == "global"
    assert run.allocation_for("l1", 0.5) == "layerwise" and run.allocation_for("cpmc", "0.5") == "global"
    assert run.settings_record("lsq", "l1", "macs0.5")["allocation"] == "sensitivity"
    given = PruneRun(RunSettings("lenet5", allocation="layerwise"))
    assert given.allocation_for("l1", Budget("macs", 0.5)) == "layerwise"


def test_rounded_counts_stay_multiples_and_the_budget_is_still_met():
    model, groups, scores, batches = planted("fc1")
    cost = _cost(model, groups, batches[0][0])
    table = analyse(model, groups, scores, batches, cost)
    plan = allocate(groups, scores, table, parse_budget("macs:0.5"), cost, round_to=8)
    assert all((g.size - len(plan.remove[g.name])) % 8 == 0 for g in groups)
    assert abs(cost.kept_fraction(plan, "macs") - 0.5) <= 0.1  # the closest plan of 8-channel steps
