"""The gates under pytest-xdist: each method measured on one worker, one summary, one report."""

import json

import pandas as pd
import pytest

GATES = ["--prune-model=lenet5", "--prune-criteria=l1,random", "--prune-ratios=0.3,0.5", "-p", "no:randomly"]
METHODS = ["l1-0.3", "l1-0.5", "random-0.3", "random-0.5"]


def _junit_properties(junit) -> dict[tuple[str, str], dict[str, str]]:
    import xml.etree.ElementTree as ET

    found = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        found[(properties["method"], properties["check"])] = properties
    return found


def test_two_workers_measure_each_method_once_and_the_controller_reports(pytester):
    """-n 2 under --dist worksteal (the plugin's scheduler replaces it: see the scheduler test):
    each baseline written once, one summary, one report row per method in gate order; the compare
    run's JUnit XML carries every gate's figures from the workers."""
    baselines, report, junit = pytester.path / "bl", pytester.path / "report", pytester.path / "junit.xml"
    args = [*GATES, f"--prune-baselines={baselines}", f"--prune-report={report}", "-n", "2", "--dist", "worksteal"]
    written = pytester.runpytest(*args, "--prune-update-baselines")
    written.assert_outcomes(passed=7 * len(METHODS))
    out = written.stdout.str()
    assert out.count("pytest-prune summary") == 1
    assert sorted(line.split()[-1] for line in out.splitlines() if line.startswith("baseline written:")) == sorted(
        str(baselines / "lenet5" / f"{m}.json") for m in METHODS)  # each file written once
    rows = pd.read_csv(report / "results.csv")
    assert rows["method"].tolist() == METHODS  # one row per method, in gate order
    table = [line.split()[1] for line in out.splitlines() if line.startswith("lenet5 ")]
    assert table == METHODS
    compared = pytester.runpytest(*args, f"--junitxml={junit}")
    compared.assert_outcomes(passed=7 * len(METHODS))
    assert "FAIL" not in compared.stdout.str() and compared.stdout.str().count("  pass") == len(METHODS)
    found = _junit_properties(junit)
    assert {m for m, _ in found} == set(METHODS) and len(found) == 7 * len(METHODS)
    verdicts = json.loads((report / "results.json").read_text())["verdicts"]  # the workers' verdicts
    assert len(verdicts) == compared.parseoutcomes()["passed"] and {v["outcome"] for v in verdicts} == {"passed"}
    assert all(v["baseline"] is not None and v["changed"].startswith("nothing recorded") for v in verdicts)
    drop = found[("l1-0.5", "accuracy_drop")]
    assert drop["model"] == "lenet5" and drop["verdict"] == "pass"
    assert float(drop["measured"]) == pytest.approx(float(drop["baseline"])) and float(drop["tolerance"]) == 0.01
    # the page's figures travel from the workers, which hold the models
    page = (report / "index.html").read_text()
    assert (report / "attribution_maps.png").is_file() and (report / "filters_removed.png").is_file()
    assert "Filters removed per layer by l1-0.3" in page  # the first method in gate order, as serially


def test_the_controller_merges_the_workers_figures_in_gate_order():
    from pytest_prune.report import merged_figures

    order = ["l1-0.3", "l1-0.5", "random-0.3", "random-0.5"].index
    gw0 = {"attribution": {"dense": [[[0.0]]], "pruned": {"random-0.3": [[[3.0]]], "l1-0.5": [[[2.0]]]}},
           "filters_removed": {"conv1": [1, 6]}, "filters_removed_method": "l1-0.5"}
    gw1 = {"attribution": {"dense": [[[0.0]]], "pruned": {"random-0.5": [[[4.0]]], "l1-0.3": [[[1.0]]]}},
           "filters_removed": {"conv1": [2, 6]}, "filters_removed_method": "l1-0.3"}
    merged = merged_figures([gw0, {}, gw1], order)
    assert list(merged["attribution"]["pruned"]) == ["l1-0.3", "l1-0.5", "random-0.3", "random-0.5"]
    assert merged["filters_removed_method"] == "l1-0.3" and merged["filters_removed"] == {"conv1": [2, 6]}
    assert merged_figures([{}, {}], order) == {}


def test_junit_xml_carries_the_figures_of_every_gate(pytester):
    baselines, junit = pytester.path / "bl", pytester.path / "junit.xml"
    args = [*GATES, "--prune-criteria=l1", "--prune-ratios=0.5", f"--prune-baselines={baselines}"]
    pytester.runpytest(*args, "--prune-update-baselines").assert_outcomes(passed=7)
    pytester.runpytest(*args, f"--junitxml={junit}").assert_outcomes(passed=7)
    found = {check: p for (_, check), p in _junit_properties(junit).items()}
    assert set(found) == {"top1", "accuracy_drop", "macs_reduction", "params_reduction",
                          "surgery_equivalence", "attribution_retention", "export_equivalence"}
    drop = found["accuracy_drop"]
    assert drop["model"] == "lenet5" and drop["method"] == "l1-0.5" and drop["verdict"] == "pass"
    assert float(drop["measured"]) == pytest.approx(float(drop["baseline"])) and float(drop["tolerance"]) == 0.01


@pytest.mark.parametrize("dist", ["load", "loadscope", "loadfile", "worksteal", "loadgroup"])
def test_every_distribution_mode_gets_the_one_shot_scheduler(dist):
    """Whatever --dist says (but each / no), the gates are scheduled by pruning."""
    from types import SimpleNamespace

    import pytest_prune.plugin as plugin
    from pytest_prune.plugin.options import GateOptions
    from pytest_prune.plugin.session import GATE_STATE, GateState

    options = GateOptions(model="lenet5", criteria=["l1"], ratios=[0.5], recoveries=["none", "lsq"],
                          baselines=None, update=False, report=None, min_speedup=None, candidates=[])
    stash = {GATE_STATE: GateState(run=None, options=options)}
    config = SimpleNamespace(stash=SimpleNamespace(get=lambda key, default=None: stash.get(key, default)),
                             getoption=lambda name, default=None: dist,
                             getvalue=lambda name: ["2*popen"])  # what -n 2 sets (xdist's --tx)
    scheduler = plugin.pytest_xdist_make_scheduler(config, log=None)
    assert type(scheduler).__name__ == "OneShotScope" and scheduler.numnodes == 2
    assert scheduler._split_scope("lenet5::l1-0.5+lsq::top1") == "lenet5::l1-0.5"


def test_every_recovery_of_one_pruning_shares_a_worker_scope():
    """Under -n, the checks of l1-0.5, l1-0.5+lsq and l1-0.5+lsq+bn go to one worker: the run
    prunes l1-0.5 once and recovers it twice (with one scope per method id, two workers each
    scored and pruned it: CAR's 3 s of scoring ran twice for every ratio)."""
    from pytest_prune.plugin import one_shot_scope

    recoveries = ["none", "lsq", "lsq+bn"]
    scopes = {one_shot_scope(f"lenet5::{m}::top1", recoveries) for m in ("l1-0.5", "l1-0.5+lsq", "l1-0.5+lsq+bn")}
    assert scopes == {"lenet5::l1-0.5"}
    assert one_shot_scope("lenet5::meanvar+tucker::top1", recoveries) == "lenet5::meanvar+tucker"
    assert one_shot_scope("lenet5::l1-macs0.5+lsq::macs_reduction", recoveries) == "lenet5::l1-macs0.5"
    assert one_shot_scope("lenet5::l1-0.3::top1", recoveries) != one_shot_scope("lenet5::l1-0.5::top1", recoveries)
