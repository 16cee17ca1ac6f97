"""Filter matching: which dense filters survive in a candidate, with cosine similarity."""

from __future__ import annotations

import pytest
import torch
from candidate_nets import same_plan

from pytest_prune.candidates import load_candidate, match_filters
from pytest_prune.errors import WeightsError
from pytest_prune.surgery import prune_model


@pytest.mark.parametrize("case_name", ["residual_case", "resnet20_case"])
def test_match_recovers_the_true_plan_with_cosine_one(case_name, request):
    case = request.getfixturevalue(case_name)
    match = match_filters(case.dense, case.pruned, case.groups)
    assert same_plan(match.plan, case.plan)
    assert match.min_cosine == pytest.approx(1.0, abs=1e-9)
    assert all(m.in_order for m in match.groups.values())
    for g in case.groups:
        assert set(match.groups[g.name].kept) | set(case.plan.remove[g.name]) == set(range(g.size))


def test_match_accepts_state_dicts(residual_case):
    dense, saved = residual_case.dense.state_dict(), torch.load(residual_case.path)
    from_state = match_filters(dense, saved, residual_case.groups)
    assert same_plan(from_state.plan, residual_case.plan)


def test_slightly_retrained_candidate_still_matches(residual_case):
    g = torch.Generator().manual_seed(7)
    state = {
        k: v + 0.05 * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
        for k, v in residual_case.pruned.state_dict().items()
    }
    match = match_filters(residual_case.dense, state, residual_case.groups)
    assert same_plan(match.plan, residual_case.plan)
    assert 0.9 < match.min_cosine < 1.0 - 1e-6


def test_candidate_of_another_dense_model_is_refused_for_placement(resnet20_case, tmp_path):
    """Matching cannot place the shortcut for filters that come from elsewhere: an error, not a
    silently misplaced network."""
    case = resnet20_case
    other = prune_model(case.dense, case.groups, case.plan, case.example)
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in other.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    assert match_filters(case.dense, other, case.groups).mean_cosine < 0.3
    with pytest.raises(WeightsError, match="cannot tell which channels of group .* mean cosine"):
        load_candidate(tmp_path / "other.pt", case.dense, case.example, groups=case.groups)
