"""Exported candidates: a torch.export program, checked, loaded and run."""

from __future__ import annotations

import json

import pytest
import torch
from candidate_nets import assert_clean, max_diff, rewrite_archive

from pytest_prune.candidates import load_candidate
from pytest_prune.errors import WeightsError


def test_pt2_round_trip_gives_equal_outputs(residual_case, exported_path):
    candidate = load_candidate(exported_path, residual_case.dense, residual_case.example)
    assert (candidate.kind, candidate.name) == ("exported", "exported")
    assert max_diff(candidate.model, residual_case.pruned, residual_case.example) <= 1e-6
    assert candidate.widths["conv3"] == 7 and candidate.widths["fc"] == 5


def test_exported_program_must_accept_the_example_input(residual_case, exported_path):
    with pytest.raises(WeightsError, match="does not accept the example input of shape") as e:
        load_candidate(exported_path, residual_case.dense, torch.randn(2, 4, 8, 8))
    assert_clean(e)


def _edit_program(key, value):
    def edit(record, data):
        if record != "models/model.json":
            return data
        program = json.loads(data)
        program[key] = value
        return json.dumps(program).encode()
    return edit


def _pickle_weights(record, data):
    if not record.endswith("_weights_config.json"):
        return data
    config = json.loads(data)
    next(iter(config["config"].values()))["use_pickle"] = True
    return json.dumps(config).encode()


def _symbolic_expression(record, data):
    if record != "models/model.json":
        return data
    evaluated = b'"as_expr": {"expr_str": "__import__(\'os\').getpid()"}'
    return data.replace(b'"as_int": 5', evaluated, 1)


def _unchanged(record, data):
    return data


UNSAFE = {  # what is changed, what is added, and the reason the error must give
    "guard code": (
        _edit_program("guards_code", ["__import__('os').getpid() > 0"]), (), "would be executed"
    ),
    "pickled weight": (_pickle_weights, (), "stored as a pickle"),
    "compiled code": (
        _unchanged, [("data/aotinductor/model/model.so", b"\x7fELF")], "data/aotinductor"
    ),
    "legacy pickle": (_unchanged, [("data/weights/model.pt", b"x")], "legacy pickled payload"),
    "shape expression": (_symbolic_expression, (), "would be evaluated"),
}


@pytest.mark.parametrize("kind", list(UNSAFE))
def test_archive_that_could_run_code_is_refused(kind, residual_case, exported_path, tmp_path):
    edit, add, reason = UNSAFE[kind]
    bad = rewrite_archive(exported_path, tmp_path / "bad.pt2", edit, add)
    with pytest.raises(WeightsError, match=reason) as e:
        load_candidate(bad, residual_case.dense, residual_case.example)
    assert "will not load" in str(e.value)
    assert_clean(e)
