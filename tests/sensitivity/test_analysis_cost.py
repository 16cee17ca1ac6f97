"""What the sensitivity analysis costs, as its docstring states it, and the two facts that make its
image count and fraction set pure cost knobs (benchmarks/sensitivity_cost.py trades them off)."""

from __future__ import annotations

import pytest
import torch

from pytest_prune.measure import count_model
from pytest_prune.models.cifar_resnet import cifar_resnet
from pytest_prune.pipeline.budget import PlanCost
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings
from pytest_prune.sensitivity import DEFAULT_FRACTIONS, DEFAULT_IMAGES, analysis, analyse
from pytest_prune.surgery import find_channel_groups


def stated(depth: int, groups: int, passes: int) -> str:
    return (f"cifar-resnet{depth}, {groups} groups, {len(DEFAULT_FRACTIONS)} fractions, {DEFAULT_IMAGES} images: "
            f"{passes} passes")


def test_the_docstring_states_the_passes_a_default_analysis_of_a_cifar_resnet_makes():
    """``1 + G · (1 + F)`` passes, counted on the real ResNet-20 (random weights, 2 images: the
    count does not depend on them), and the figures the module's docstring gives for ResNet-20 and,
    by the same count of its groups, ResNet-56 (whose analysis takes too long for a default test)."""
    torch.manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    model = cifar_resnet(20).eval()
    found = find_channel_groups(model, x)
    scores = {g.name: torch.arange(g.size, dtype=torch.float64) for g in found}
    table = analyse(model, found, scores, [(x, y)], PlanCost(model, found, count_model(model, x)))
    assert len(found) == 12 and table.images == 2
    assert table.passes == 1 + 12 * (1 + len(DEFAULT_FRACTIONS))
    assert stated(20, 12, table.passes) in " ".join(analysis.__doc__.split())
    deep = len(find_channel_groups(cifar_resnet(56).eval(), x))
    assert stated(56, deep, 1 + deep * (1 + len(DEFAULT_FRACTIONS))) in " ".join(analysis.__doc__.split())


@pytest.fixture(scope="module")
def lenet5():
    from pytest_prune.criteria import ScoringContext, get_criterion

    run = PruneRun(RunSettings("lenet5"))
    scores = get_criterion("l1").scores(ScoringContext(run.info.model, run.groups))
    return run, scores, PlanCost(run.info.model, run.groups, run.dense_count)


def test_a_fraction_left_out_changes_no_other_point(lenet5):
    """Each fraction is its own replay from the group's cached prefix: nothing one fraction's pass
    leaves behind (a mask, a refit weight, a cached output) reaches the next. So a shorter fraction
    set measures exactly a subset of the longer one's points; only the allocation's interpolation
    between them changes."""
    run, scores, cost = lenet5
    for recovery in ("none", "lsq"):
        every = analyse(run.info.model, run.groups, scores, run.calibration, cost, recovery=recovery)
        some = analyse(run.info.model, run.groups, scores, run.calibration, cost, fractions=(0.5, 0.9),
                       recovery=recovery)
        assert some.points == [p for p in every.points if p.fraction in (0.5, 0.9)] and some.points
        # a dense pass (and with lsq the capture), then per group a prefix pass and one per point
        assert some.passes == (1 if recovery == "none" else 2) + len({p.group for p in some.points}) + len(some.points)


def test_fewer_images_are_the_first_images(lenet5):
    """``images=N`` is the analysis of the first N calibration images and nothing else."""
    run, scores, cost = lenet5
    x = torch.cat([b[0] for b in run.calibration])
    y = torch.cat([b[1] for b in run.calibration])
    fewer = analyse(run.info.model, run.groups, scores, run.calibration, cost, fractions=(0.5,), images=64)
    first = analyse(run.info.model, run.groups, scores, [(x[:64], y[:64])], cost, fractions=(0.5,))
    other = analyse(run.info.model, run.groups, scores, [(x[64:128], y[64:128])], cost, fractions=(0.5,))
    assert fewer.images == 64 and fewer.points == first.points
    assert fewer.points != other.points  # the comparison above can tell two samples apart
