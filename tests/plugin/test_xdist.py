"""The gates under pytest-xdist: each method measured on one worker, one summary, one report."""

import pandas as pd
import pytest

GATES = ["--prune-model=lenet5", "--prune-criteria=l1,random", "--prune-ratios=0.3,0.5", "-p", "no:randomly"]
METHODS = ["l1-0.3", "l1-0.5", "random-0.3", "random-0.5"]


@pytest.mark.parametrize("dist", ["load", "worksteal"])
def test_two_workers_measure_each_method_once_and_the_controller_reports(pytester, dist):
    baselines, report = pytester.path / "bl", pytester.path / "report"
    args = [*GATES, f"--prune-baselines={baselines}", f"--prune-report={report}", "-n", "2", "--dist", dist]
    written = pytester.runpytest(*args, "--prune-update-baselines")
    written.assert_outcomes(passed=6 * len(METHODS))
    out = written.stdout.str()
    assert out.count("pytest-prune summary") == 1
    assert sorted(line.split()[-1] for line in out.splitlines() if line.startswith("baseline written:")) == sorted(
        str(baselines / "lenet5" / f"{m}.json") for m in METHODS)  # each file written once
    rows = pd.read_csv(report / "results.csv")
    assert rows["method"].tolist() == METHODS  # one row per method, in gate order
    table = [line.split()[1] for line in out.splitlines() if line.startswith("lenet5 ")]
    assert table == METHODS
    compared = pytester.runpytest(*args)
    compared.assert_outcomes(passed=6 * len(METHODS))
    assert "FAIL" not in compared.stdout.str() and compared.stdout.str().count("  pass") == len(METHODS)
