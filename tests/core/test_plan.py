import pytest
import torch

from pytest_prune.errors import SpecError
from pytest_prune.groups import ChannelGroup
from pytest_prune.plan import plan_from_scores, removal_count


def _groups(*sizes):
    return [ChannelGroup(f"g{i}", f"m{i}", tuple(range(s)), ()) for i, s in enumerate(sizes)]


def test_removal_count_rounds_and_keeps_one():
    assert removal_count(10, 0.3) == 3
    assert removal_count(6, 0.5) == 3
    assert removal_count(6, 0.75) == 5  # 4.5 rounds up, still one left
    assert removal_count(2, 0.99) == 1
    assert removal_count(1, 0.9) == 0


def test_layerwise_removes_lowest_scores_per_group():
    groups = _groups(4, 2)
    scores = {"g0": torch.tensor([3.0, 1.0, 2.0, 0.5]), "g1": torch.tensor([1.0, 0.0])}
    plan = plan_from_scores(groups, scores, 0.5)
    assert plan.remove == {"g0": (1, 3), "g1": (1,)}
    assert plan.kept(groups[0]) == (0, 2)


def test_ties_break_towards_the_lower_position():
    groups = _groups(4)
    plan = plan_from_scores(groups, {"g0": torch.zeros(4)}, 0.5)
    assert plan.remove == {"g0": (0, 1)}


def test_global_allocation_ranks_across_groups_with_a_floor():
    groups = _groups(4, 4)
    scores = {"g0": torch.tensor([0.1, 0.2, 0.3, 0.4]), "g1": torch.tensor([5.0, 6.0, 7.0, 8.0])}
    plan = plan_from_scores(groups, scores, 0.5, "global")
    # 4 of 8 channels go; g0 may lose at most 3 (floor: one channel kept), so one comes from g1
    assert plan.remove == {"g0": (0, 1, 2), "g1": (0,)}


def test_bad_inputs_are_clear_errors():
    groups = _groups(3)
    with pytest.raises(ValueError, match="no scores"):
        plan_from_scores(groups, {}, 0.5)
    with pytest.raises(ValueError, match="2 scores for group g0 of 3"):
        plan_from_scores(groups, {"g0": torch.zeros(2)}, 0.5)
    with pytest.raises(SpecError, match="outside"):
        plan_from_scores(groups, {"g0": torch.zeros(3)}, 1.5)
    with pytest.raises(SpecError, match="unknown allocation"):
        plan_from_scores(groups, {"g0": torch.zeros(3)}, 0.5, "sideways")
