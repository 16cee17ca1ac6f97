import json, sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "report"))
import jsonschema, pandas as pd
from test_results_json import SCHEMA, method_row, sensitivity_table_rows, verdict
from pytest_prune.report import write_report


def test_the_report_puts_the_workers_sensitivity_rows_in_results_json(tmp_path):
    # a pytest-xdist controller: no run, rows and figures merged from the workers
    rows = sensitivity_table_rows()
    write_report(None, tmp_path, rows=[method_row("l1-macs0.5")], verdicts=[verdict("l1-macs0.5", "top1", "passed")],
                 figures={"sensitivity": rows})
    document = json.loads((tmp_path / "results.json").read_text())
    jsonschema.validate(document, SCHEMA)
    assert [r["criterion"] for r in document["sensitivity"]] == [r["criterion"] for r in rows]
    assert len(pd.read_csv(tmp_path / "results.csv")) == 1  # results.csv: one row per method, as before


def test_a_worker_without_maps_still_sends_its_table(tmp_path):
    from pytest_prune.report import merged_figures

    rows = sensitivity_table_rows()
    figures = merged_figures([{"sensitivity": rows[:2]}, {"sensitivity": rows}], order=lambda m: 0)
    assert figures == {"sensitivity": rows}  # each (criterion, recovery, group, fraction) once
    write_report(None, tmp_path, rows=[method_row("l1-macs0.5")], verdicts=[], figures=figures)
    assert len(json.loads((tmp_path / "results.json").read_text())["sensitivity"]) == len(rows)
