"""Candidate files that cannot be loaded: clean WeightsErrors that name the file and the layer."""

from __future__ import annotations

import zipfile

import pytest
import torch
from candidate_nets import assert_clean, flip_byte, truncate

from pytest_prune.candidates import load_candidate
from pytest_prune.errors import WeightsError


def _save(state, path):
    torch.save(state, path)
    return path


def test_inconsistent_width_in_residual_group_names_the_layer(resnet20_case, tmp_path):
    case = resnet20_case
    state = case.pruned.state_dict()
    # one block of the stage-1 residual stream keeps one channel fewer than the rest
    state["layer1.1.conv2.weight"] = state["layer1.1.conv2.weight"][:-1]
    for k in ("weight", "bias", "running_mean", "running_var"):
        state[f"layer1.1.bn2.{k}"] = state[f"layer1.1.bn2.{k}"][:-1]
    path = _save(state, tmp_path / "inconsistent.pt")
    with pytest.raises(WeightsError) as e:
        load_candidate(path, case.dense, case.example, groups=case.groups)
    message = str(e.value)
    assert "inconsistent widths in channel group 'conv1'" in message
    assert "'layer1.1.conv2' (output) has 9 (expected 10, dense 16)" in message
    assert "'layer1.1.bn2' (output) has 9" in message
    assert "keep 10 of 16 channels" in message
    assert_clean(e)


def test_missing_and_unexpected_keys_are_listed(residual_case, tmp_path):
    state = residual_case.pruned.state_dict()
    state["head.weight"] = state.pop("fc.weight")
    path = _save(state, tmp_path / "renamed.pt")
    listed = r"1 missing keys, e.g. \['fc.weight'\]; 1 unexpected keys, e.g. \['head.weight'\]"
    with pytest.raises(WeightsError, match=listed) as e:
        load_candidate(path, residual_case.dense, residual_case.example)
    assert_clean(e)


def _fewer_logits(state):
    state["fc.weight"], state["fc.bias"] = state["fc.weight"][:4], state["fc.bias"][:4]


def _wider_conv3(state):  # the whole group conv3/bn3/fc-input at 14 channels; the dense has 12
    for k in ("conv3.weight", "conv3.bias", "bn3.weight", "bn3.bias"):
        state[k] = torch.cat([state[k]] * 2)
    for k in ("bn3.running_mean", "bn3.running_var"):
        state[k] = torch.cat([state[k]] * 2)
    state["fc.weight"] = torch.cat([state["fc.weight"]] * 2, dim=1)


@pytest.mark.parametrize(
    "edit, message",
    [
        # the logits are in no channel group: our surgery never removes them
        (_fewer_logits, r"'fc.weight' has shape \(4, 112\).*layer 'fc'.*\(5, 112\)"),
        (_wider_conv3, r"layer 'conv3' \(output\) has width 14, more than the dense model's 12"),
    ],
)
def test_width_our_surgery_cannot_reach_names_the_layer(edit, message, residual_case, tmp_path):
    state = residual_case.pruned.state_dict()
    edit(state)
    path = _save(state, tmp_path / "unreachable.pt")
    with pytest.raises(WeightsError, match=message) as e:
        load_candidate(path, residual_case.dense, residual_case.example)
    assert_clean(e)


@pytest.mark.parametrize("keep", [0.5, 0.98])
@pytest.mark.parametrize("which", ["state dict", "pt2"])
def test_truncated_file_is_refused_cleanly(which, keep, residual_case, exported_path, tmp_path):
    src = residual_case.path if which == "state dict" else exported_path
    bad = truncate(src, tmp_path / f"cut{src.suffix}", keep)
    with pytest.raises(WeightsError, match="is truncated or damaged") as e:
        load_candidate(bad, residual_case.dense, residual_case.example)
    assert str(bad) in str(e.value)
    assert_clean(e)


@pytest.mark.parametrize(
    "which, record",
    [("state dict", "data/0"), ("state dict", "data.pkl"),
     ("pt2", "data/weights/weight_0"), ("pt2", "models/model.json")],
)
def test_flipped_byte_is_caught_by_the_crc_check(
    which, record, residual_case, exported_path, tmp_path
):
    src = residual_case.path if which == "state dict" else exported_path
    # torch.load itself would load a flipped tensor byte silently, as a slightly different weight
    bad = flip_byte(src, tmp_path / f"flipped{src.suffix}", record)
    with pytest.raises(WeightsError, match=f"entry '.*{record}' fails its CRC check") as e:
        load_candidate(bad, residual_case.dense, residual_case.example)
    assert_clean(e)


def test_missing_and_foreign_files(residual_case, tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_candidate(tmp_path / "nothing.pt", residual_case.dense, residual_case.example)
    with zipfile.ZipFile(tmp_path / "notes.zip", "w") as z:
        z.writestr("notes/readme.txt", "hello")
    with pytest.raises(WeightsError, match="neither a torch.save file"):
        load_candidate(tmp_path / "notes.zip", residual_case.dense, residual_case.example)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(WeightsError) as e:
        load_candidate(tmp_path / "text.pt", residual_case.dense, residual_case.example)
    assert_clean(e)
