"""results.json: the verdicts and baseline values beside the measurements, valid against the
documented schema (docs/results.schema.json), whose version is the one the writer stamps."""

import json
import math
from pathlib import Path

import jsonschema  # the test extra installs it
import pandas as pd
import pytest

from pytest_prune.report.results_json import SCHEMA_VERSION, results_document, write_results_json

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMA = json.loads((DOCS / "results.schema.json").read_text())


def method_row(method="l1-0.5", **extra) -> dict:
    return {"model": "lenet5", "criterion": method.split("-")[0], "ratio": 0.5, "recovery": "none",
            "method": method, "top1_dense": 0.97, "top1_pruned": 0.9, "macs_dense": 1000, "macs_pruned": 400,
            "params_dense": 60, "params_pruned": 30, "score_seconds": 0.1, "speedup": math.nan, **extra}


def verdict(method, check, outcome, measured=0.9, baseline=0.95) -> dict:
    return {"model": "lenet5", "method": method, "check": check, "outcome": outcome, "measured": measured,
            "baseline": baseline, "tolerance": 0.01, "better": "higher", "direction": "higher is better",
            "meaning": "top-1", "changed": "nothing recorded", "message": "top1 ... -> REGRESSION"}


def test_the_written_file_is_valid_and_puts_failures_first(tmp_path):
    frame = pd.DataFrame([method_row("l1-0.5"), method_row("random-0.5")])
    rows = [verdict("random-0.5", "top1", "passed"), verdict("l1-0.5", "top1", "failed"),
            verdict("l1-0.5", "accuracy_drop", "error", math.nan, None)]
    path = write_results_json(tmp_path / "results.json", frame, rows, "lenet5")
    document = json.loads(path.read_text())  # strict JSON: no NaN tokens (allow_nan=False)
    jsonschema.validate(document, SCHEMA)
    assert document["schema_version"] == SCHEMA_VERSION == SCHEMA["properties"]["schema_version"]["const"]
    assert document["status"] == "failed"
    assert document["counts"] == {"failed": 1, "error": 1, "written": 0, "passed": 1}
    assert [(v["method"], v["outcome"]) for v in document["verdicts"]] == [
        ("l1-0.5", "failed"), ("l1-0.5", "error"), ("random-0.5", "passed")]
    assert document["verdicts"][0]["baseline"] == 0.95 and document["verdicts"][1]["measured"] is None
    assert [m["method"] for m in document["methods"]] == ["l1-0.5", "random-0.5"]
    assert document["methods"][0]["speedup"] is None


@pytest.mark.parametrize("outcomes, status", [
    (["passed", "passed"], "passed"), (["written", "written"], "written"), (["passed", "error"], "failed"),
    (["written", "failed"], "failed"), ([], "none"),
])
def test_status_is_the_worst_outcome(outcomes, status):
    rows = [verdict(f"m{i}", "top1", o) for i, o in enumerate(outcomes)]
    document = results_document(pd.DataFrame([method_row()]), rows, "lenet5")
    assert document["status"] == status
    jsonschema.validate(document, SCHEMA)


@pytest.mark.parametrize("break_it", [
    lambda d: d.pop("schema_version"),
    lambda d: d.update(schema_version=SCHEMA_VERSION + 1),
    lambda d: d["verdicts"][0].update(outcome="maybe"),
    lambda d: d["verdicts"][0].pop("baseline"),
    lambda d: d["methods"][0].pop("top1_pruned"),
    lambda d: d.update(status="green"),
])
def test_the_schema_rejects_a_broken_file(break_it):
    document = results_document(pd.DataFrame([method_row()]), [verdict("l1-0.5", "top1", "failed")], "lenet5")
    jsonschema.validate(document, SCHEMA)
    break_it(document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)


def test_the_doc_names_every_field_of_the_schema():
    doc = (DOCS / "results-json.md").read_text()
    fields = set(SCHEMA["required"]) | set(SCHEMA["$defs"]["verdict"]["required"])
    assert f"schema_version`: {SCHEMA_VERSION}" in doc
    assert [f for f in sorted(fields) if f"`{f}`" not in doc] == []


def sensitivity_table_rows() -> list[dict]:
    """The rows a run with two criteria analysed would report (sensitivity.csv's rows)."""
    from pytest_prune.sensitivity import SensitivityPoint, SensitivityTable
    from pytest_prune.sensitivity.files import sensitivity_rows

    def table(criterion, recovery, top1):
        points = [SensitivityPoint("conv1", f, round(f * 6), 6, top1 - f / 10, math.nan if f > 0.8 else 0.3 + f,
                                   int(1000 * f), int(60 * f)) for f in (0.5, 0.9)]
        return SensitivityTable(criterion, recovery, 128, top1, 0.25, points)

    return sensitivity_rows([table("l1", "none", 0.97), table("random", "lsq", 0.96)], "lenet5")


def test_the_sensitivity_table_is_an_optional_array_of_its_rows(tmp_path):
    frame = pd.DataFrame([method_row("l1-macs0.5")])
    rows = [verdict("l1-macs0.5", "top1", "passed")]
    without = json.loads(write_results_json(tmp_path / "a.json", frame, rows, "lenet5").read_text())
    assert "sensitivity" not in without  # nothing analysed: the version 1 file as before
    table = sensitivity_table_rows()
    document = json.loads(write_results_json(tmp_path / "b.json", frame, rows, "lenet5", table).read_text())
    jsonschema.validate(document, SCHEMA)
    assert {k: v for k, v in document.items() if k != "sensitivity"} == without
    got = document["sensitivity"]
    assert [(r["criterion"], r["recovery"], r["group"], r["fraction"]) for r in got] == [
        ("l1", "none", "conv1", 0.5), ("l1", "none", "conv1", 0.9),
        ("random", "lsq", "conv1", 0.5), ("random", "lsq", "conv1", 0.9)]
    assert got[0] == {**table[0], "loss": 0.8} and got[0]["model"] == "lenet5" and got[0]["removed"] == 3
    assert got[1]["loss"] is None  # NaN is not JSON: the strict writer would have refused it


@pytest.mark.parametrize("break_it", [
    lambda r: r.pop("criterion"),
    lambda r: r.pop("macs_saved"),
    lambda r: r.update(fraction=1.5),
    lambda r: r.update(recovery="bn"),
    lambda r: r.update(removed="3"),
])
def test_the_schema_rejects_a_broken_sensitivity_row(break_it):
    document = results_document(pd.DataFrame([method_row()]), [], "lenet5", sensitivity_table_rows())
    jsonschema.validate(document, SCHEMA)
    break_it(document["sensitivity"][0])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(document, SCHEMA)


def test_the_schema_and_the_doc_name_every_column_of_sensitivity_csv():
    from pytest_prune.report.sensitivity_map import COLUMNS

    doc = (DOCS / "results-json.md").read_text()
    point = SCHEMA["$defs"]["sensitivity_point"]
    assert sorted(point["required"]) == sorted(COLUMNS) == sorted(sensitivity_table_rows()[0])
    assert "`sensitivity`" in doc and [c for c in COLUMNS if f"`{c}`" not in doc] == []
