"""State-dict candidates: the dense architecture shrunk to the candidate's widths, loaded."""

from __future__ import annotations

import copy

import pytest
import torch
import torch_pruning as tp
from candidate_nets import TinyVGG, max_diff, randomise_batchnorm, same_plan

from pytest_prune.candidates import load_candidate, match_filters
from pytest_prune.errors import WeightsError
from pytest_prune.layers import PadShortcut
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups, prune_model


def _shapes(model):
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("case_name", ["residual_case", "resnet20_case"])
def test_candidate_cut_by_our_surgery_loads_with_identical_outputs(case_name, request):
    case = request.getfixturevalue(case_name)
    dense_before = copy.deepcopy(case.dense.state_dict())
    candidate = load_candidate(case.path, case.dense, case.example, groups=case.groups)
    assert (candidate.kind, candidate.name) == ("state_dict", "candidate")
    assert _shapes(candidate.model) == _shapes(case.pruned)
    assert max_diff(candidate.model, case.pruned, case.example) <= 1e-6
    removed = {g.name: len(case.plan.remove[g.name]) for g in case.groups}
    assert {n: len(p) for n, p in candidate.plan.remove.items()} == removed
    # the dense model is the reference: loading a candidate must leave it as it was
    assert all(torch.equal(v, case.dense.state_dict()[k]) for k, v in dense_before.items())


def test_widths_are_inferred_from_tensor_shapes(residual_case):
    candidate = load_candidate(residual_case.path, residual_case.dense, residual_case.example)
    # stream group conv1/bn1/conv2/bn2: 8 channels, 3 removed; conv3/bn3: 12, 5 removed
    assert candidate.widths == {
        "conv1": 5, "bn1": 5, "conv2": 5, "bn2": 5, "conv3": 7, "bn3": 7, "fc": 5
    }
    assert candidate.model.fc.in_features == 7 * 16  # one channel = 16 flattened inputs
    assert "2 of 2 channel groups shrunk, 8 channels removed" in candidate.notes[0]


@pytest.mark.parametrize("form", ["checkpoint dict", "legacy format"])
def test_other_state_dict_files_load(form, residual_case, tmp_path):
    state = residual_case.pruned.state_dict()
    path = tmp_path / "other_form.pt"
    if form == "checkpoint dict":
        torch.save({"state_dict": state, "epoch": 3}, path)
    else:  # torch's pre-1.6 serialisation: not a zip archive
        torch.save(state, path, _use_new_zipfile_serialization=False)
    candidate = load_candidate(path, residual_case.dense, residual_case.example)
    assert max_diff(candidate.model, residual_case.pruned, residual_case.example) <= 1e-6


def test_resnet20_shortcut_placement_is_recovered_by_matching(resnet20_case):
    case = resnet20_case
    candidate = load_candidate(case.path, case.dense, case.example, groups=case.groups)
    assert same_plan(candidate.plan, case.plan)
    assert candidate.match.min_cosine > 1 - 1e-9
    shortcuts = [(n, m) for n, m in case.pruned.named_modules() if isinstance(m, PadShortcut)]
    assert len(shortcuts) == 2
    for name, shortcut in shortcuts:
        assert candidate.model.get_submodule(name).positions == shortcut.positions


def test_resnet20_shapes_alone_do_not_fix_the_shortcut(resnet20_case):
    """Same widths, other removed channels: the shortcut adds its input at other positions."""
    case = resnet20_case
    guess = load_candidate(
        case.path, case.dense, case.example, groups=case.groups, placement="last"
    )
    assert _shapes(guess.model) == _shapes(case.pruned)
    moved = [
        n for n, m in case.pruned.named_modules()
        if isinstance(m, PadShortcut) and guess.model.get_submodule(n).positions != m.positions
    ]
    assert moved
    assert max_diff(guess.model, case.pruned, case.example) > 1e-3
    assert any("guess" in note for note in guess.notes)


def test_a_given_plan_places_the_shortcut_and_is_checked(resnet20_case):
    case = resnet20_case
    given = load_candidate(
        case.path, case.dense, case.example, groups=case.groups, placement=case.plan
    )
    assert max_diff(given.model, case.pruned, case.example) <= 1e-6
    short = PrunePlan({**case.plan.remove, "conv1": case.plan.remove["conv1"][1:]})
    with pytest.raises(WeightsError, match="removes 5 channels of group 'conv1'.*shapes say 6"):
        load_candidate(case.path, case.dense, case.example, groups=case.groups, placement=short)


def test_candidate_pruned_by_torch_pruning_directly(tmp_path):
    torch.manual_seed(3)
    example = torch.randn(2, 3, 8, 8)
    dense = randomise_batchnorm(TinyVGG(), seed=3)
    made_by_tp = copy.deepcopy(dense)
    pruner = tp.pruner.MetaPruner(
        made_by_tp, example, importance=tp.importance.MagnitudeImportance(p=1),
        pruning_ratio=0.5, ignored_layers=[made_by_tp.classifier[3]],
    )
    pruner.step()
    made_by_tp.eval()
    path = tmp_path / "vgg_tp.pt"
    torch.save(made_by_tp.state_dict(), path)

    candidate = load_candidate(path, dense, example)
    assert _shapes(candidate.model) == _shapes(made_by_tp)
    assert max_diff(candidate.model.eval(), made_by_tp, example) <= 1e-6
    assert candidate.widths == {
        "features.0": 8, "features.1": 8, "features.3": 8, "features.4": 8,
        "features.7": 16, "features.8": 16, "classifier.1": 16, "classifier.3": 10,
    }
    # Matching finds Torch-Pruning's choice: our surgery with it rebuilds the candidate exactly.
    groups = find_channel_groups(dense, example)
    match = match_filters(dense, made_by_tp, groups)
    assert match.min_cosine > 1 - 1e-9
    rebuilt = prune_model(dense, groups, match.plan, example).state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in made_by_tp.state_dict().items())
