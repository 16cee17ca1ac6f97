"""The report's sensitivity heat map and sensitivity.csv, from the plain rows a run (or a
pytest-xdist worker) hands it."""

import csv

import pandas as pd

from pytest_prune.report.html import write_html_report
from pytest_prune.report.sensitivity_map import COLUMNS, write_sensitivity_rows


def _rows():
    rows = []
    for group, fragile in (("conv1", False), ("conv2", True)):
        for fraction in (0.25, 0.5, 0.75):
            top1 = 0.9 - (0.6 * fraction if fragile else 0.01)
            rows.append({"model": "m", "criterion": "l1", "recovery": "none", "images": 64, "dense_top1": 0.9,
                         "group": group, "fraction": fraction, "removed": int(8 * fraction), "size": 8,
                         "top1": top1, "loss": 1.0 - top1, "macs_saved": 1000 * fraction, "params_saved": 10})
    return rows


def test_the_page_draws_the_heat_map_of_the_rows_it_is_given(tmp_path):
    frame = pd.DataFrame([{"model": "m", "criterion": "l1", "ratio": 0.5, "top1_pruned": 0.8, "top1_dense": 0.9,
                           "macs_dense": 100, "macs_pruned": 60}])
    write_html_report(tmp_path / "with", frame, {"sensitivity": _rows()})
    page = (tmp_path / "with" / "index.html").read_text()
    assert (tmp_path / "with" / "sensitivity.png").is_file() and 'src="sensitivity.png"' in page
    write_html_report(tmp_path / "without", frame, {})
    page = (tmp_path / "without" / "index.html").read_text()
    assert not (tmp_path / "without" / "sensitivity.png").exists()
    assert "Skipped: no sensitivity analysis ran" in page


def test_sensitivity_csv_holds_every_row_under_its_columns(tmp_path):
    paths = write_sensitivity_rows(tmp_path, _rows())
    assert [p.name for p in paths] == ["sensitivity.csv", "sensitivity.json"]
    with paths[0].open() as f:
        read = list(csv.DictReader(f))
    assert list(read[0]) == list(COLUMNS) and len(read) == 6
    assert {r["group"] for r in read if float(r["top1"]) < 0.8} == {"conv2"}
    assert write_sensitivity_rows(tmp_path / "none", []) == []
