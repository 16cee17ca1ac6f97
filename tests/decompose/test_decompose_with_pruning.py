"""Decomposition and pruning compose, in either order: the model runs and the counts add up."""

import pytest
import torch
from torch import nn

from pytest_prune.pipeline.budget import PlanCost
from pytest_prune.decompose import decompose_model
from pytest_prune.equivalence import max_abs_difference
from pytest_prune.measure import count_model
from pytest_prune.models import build_model
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


def _half_plan(groups, seed):
    generator = torch.Generator().manual_seed(seed)
    remove = {}
    for g in groups:
        order = torch.randperm(g.size, generator=generator).tolist()
        remove[g.name] = tuple(sorted(order[: g.size // 2]))
    return PrunePlan(remove)


@pytest.mark.parametrize("spec", ["lenet5", "cifar-resnet20"])
def test_prune_then_decompose(spec):
    info = build_model(spec)
    model, x = info.model.eval(), info.example_input(2)
    groups = find_channel_groups(model, x)
    pruned = prune_model(model, groups, _half_plan(groups, 0), x)
    decomposed, report = decompose_model(pruned, x, ranks="fraction", value=0.5)
    assert decomposed(x).shape == model(x).shape
    before, after = count_model(pruned, x), count_model(decomposed, x)
    # what the report says decomposition saved is exactly the difference of the two counts
    saved_macs = sum(layer.macs_before - layer.macs_after for layer in report.layers)
    saved_params = sum(layer.params_before - layer.params_after for layer in report.layers)
    assert any(layer.decision == "decomposed" for layer in report.layers)
    assert before.macs - after.macs == saved_macs
    assert before.params - after.params == saved_params


@pytest.mark.parametrize("spec", ["lenet5", "cifar-resnet20"])
def test_decompose_then_prune(spec):
    info = build_model(spec)
    model, x = info.model.eval(), info.example_input(2)
    decomposed, _ = decompose_model(model, x, ranks="fraction", value=0.5)
    groups = find_channel_groups(decomposed, x)
    # the factor convs' channels (Tucker ranks) are prunable channel groups too
    assert any(isinstance(decomposed.get_submodule(g.root), nn.Conv2d) and g.root.endswith(".0")
               for g in groups)
    plan = _half_plan(groups, 1)
    pruned = prune_model(decomposed, groups, plan, x)
    assert max_abs_difference(decomposed, pruned, groups, plan, x) <= 1e-5
    dense_count, pruned_count = count_model(decomposed, x), count_model(pruned, x)
    # the plan's cost, computed from the groups alone, is what the pruned model measures
    assert PlanCost(decomposed, groups, dense_count).kept(plan) == (pruned_count.macs, pruned_count.params)
