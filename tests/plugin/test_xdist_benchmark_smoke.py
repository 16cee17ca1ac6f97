"""``benchmarks/xdist.py`` reads what the plugin writes: its summary table, and results.csv with
the timing columns left out of the comparison (and only those). The timed runs themselves are too
slow for the suite (``python benchmarks/xdist.py --criteria l1,random`` takes about a minute)."""

import csv
import dataclasses
import importlib.util
import sys
from pathlib import Path

_BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "xdist.py"
_spec = importlib.util.spec_from_file_location("xdist_benchmark", _BENCHMARK)
bench = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = bench  # dataclasses look their module up there
_spec.loader.exec_module(bench)  # by path: benchmarks/ is no package, and its names stay off sys.path


def test_only_the_clocks_of_a_result_are_timing_columns():
    from pytest_prune.pipeline.results import MethodResult

    timing = {f.name for f in dataclasses.fields(MethodResult) if bench.TIMING_COLUMN.search(f.name)}
    assert timing == {"score_seconds", "prune_seconds", "recovery_seconds", "latency_dense_ms",
                      "latency_pruned_ms", "latency_dense_iqr_ms", "latency_pruned_iqr_ms", "speedup"}


def _write(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_reports_differ_in_results_not_in_timings(tmp_path):
    rows = [{"method": "l1-0.3", "top1_pruned": "0.98", "score_seconds": "0.01"},
            {"method": "l1-0.5", "top1_pruned": "0.91", "score_seconds": "0.02"}]
    serial = _write(tmp_path / "serial.csv", rows)
    slower = _write(tmp_path / "slower.csv", [{**r, "score_seconds": "9.9"} for r in rows])
    other = _write(tmp_path / "other.csv", [rows[0], {**rows[1], "top1_pruned": "0.90"}])
    swapped = _write(tmp_path / "swapped.csv", rows[::-1])
    assert bench.report_differences(serial, slower) == []
    assert bench.report_differences(serial, other) == ["column top1_pruned differs for l1-0.5"]
    assert bench.report_differences(serial, swapped)[0].startswith("rows differ")


def test_the_summary_and_report_of_a_real_run_are_read(pytester):
    report = pytester.path / "report"
    result = pytester.runpytest("--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5",
                                f"--prune-baselines={pytester.path / 'bl'}", "--prune-update-baselines",
                                f"--prune-report={report}", "-q")
    result.assert_outcomes(passed=7)
    assert bench.summary_methods(result.stdout.str()) == (1, ["l1-0.5"])
    assert bench.report_methods(report / "results.csv") == ["l1-0.5"]
    assert bench.report_differences(report / "results.csv", report / "results.csv") == []
