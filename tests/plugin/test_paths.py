"""Path options never move the project: baselines stay in the project's ``baselines/`` whatever
paths are given, in the ``--opt PATH`` form (which pytest folds into its rootdir) or ``--opt=PATH``."""

import pytest
import torch

from pytest_prune.pipeline.run import PruneRun

from pytest_prune.pipeline.settings import RunSettings

GATES = ["--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5", "-p", "no:randomly"]


@pytest.fixture
def project(pytester, monkeypatch):
    """A project with an ini file, pytest started inside it; other folders of pytester.path are outside."""
    project = pytester.mkdir("proj")
    (project / "pytest.ini").write_text("[pytest]\n")
    monkeypatch.chdir(project)
    return project


def _option(name: str, value, form: str) -> list[str]:
    return [f"{name}={value}"] if form == "equals" else [name, str(value)]


def _run(pytester, project, *args):
    return pytester.runpytest(*GATES, *args)  # in the current folder: the project


@pytest.mark.parametrize("form", ["space", "equals"])
def test_report_folder_outside_the_project(pytester, project, form):
    outside = pytester.mkdir(f"reports-{form}")  # exists: pytest would take it into its rootdir
    args = _option("--prune-report", outside, form)
    _run(pytester, project, *args, "--prune-update-baselines").assert_outcomes(passed=7)
    assert (project / "baselines" / "lenet5" / "l1-0.5.json").is_file()
    assert not (pytester.path / "baselines").exists()
    _run(pytester, project, *args).assert_outcomes(passed=7)
    assert (outside / "results.csv").is_file()


@pytest.mark.parametrize("form", ["space", "equals"])
def test_weights_outside_the_project(pytester, project, form):
    elsewhere = pytester.mkdir("models")
    weights = elsewhere / "w.pth"
    torch.save(PruneRun(RunSettings("lenet5")).info.model.state_dict(), weights)
    args = _option("--prune-weights", weights, form)
    _run(pytester, project, *args, "--prune-update-baselines").assert_outcomes(passed=7)
    assert (project / "baselines" / "lenet5" / "l1-0.5.json").is_file()
    assert not (pytester.path / "baselines").exists() and not (elsewhere / "baselines").exists()
    _run(pytester, project, *args).assert_outcomes(passed=7)


@pytest.mark.parametrize("form", ["space", "equals"])
def test_candidate_outside_the_project(pytester, project, form):
    elsewhere = pytester.mkdir("release")
    candidate = elsewhere / "rc1.pt"
    torch.save(PruneRun(RunSettings("lenet5")).method("l1", 0.5).pruned_model.state_dict(), candidate)
    args = _option("--prune-candidate", candidate, form)
    _run(pytester, project, *args, "--prune-update-baselines").assert_outcomes(passed=13)
    assert (project / "baselines" / "lenet5" / "candidate-rc1.json").is_file()
    assert not (elsewhere / "baselines").exists()
    _run(pytester, project, *args).assert_outcomes(passed=13)


def test_relative_option_paths_resolve_from_the_invocation_folder(pytester, project):
    (project / "sub").mkdir()
    _run(pytester, project, "--prune-baselines", "sub/bl", "--prune-update-baselines").assert_outcomes(passed=7)
    assert (project / "sub" / "bl" / "lenet5" / "l1-0.5.json").is_file()


def test_no_cacheprovider_and_no_cache_folder(pytester, project):
    result = _run(pytester, project, "-p", "no:cacheprovider", "--prune-update-baselines")
    result.assert_outcomes(passed=7)
    assert not (project / ".pytest_cache").exists()


def test_ini_keys_hold_when_a_path_option_is_given_in_the_space_form(pytester, project):
    """pytest chooses its ini file before it knows the plugin's options, so an existing path given
    as a separate argument makes it miss ``proj/pytest.ini``; the plugin still reads its keys there."""
    (project / "pytest.ini").write_text(
        "[pytest]\nprune_model = lenet5\nprune_criteria = l1\nprune_ratios = 0.5\nprune_ignore =\n    features.0\n")
    outside = pytester.mkdir("reports")
    written = pytester.runpytest("--prune-report", str(outside), "--prune-update-baselines", "-p", "no:randomly")
    written.assert_outcomes(passed=7)
    stored = (project / "baselines" / "lenet5" / "l1-0.5.json").read_text()
    assert '"ignore": [\n      "features.0"\n    ]' in stored or '"ignore": ["features.0"]' in stored
    pytester.runpytest("--prune-report", str(outside), "-p", "no:randomly").assert_outcomes(passed=7)


def test_report_outside_the_repository_passes_against_the_committed_baselines(pytester, monkeypatch):
    """Run from this repository's root, the space form: the default baselines/ stays the project's."""
    from pathlib import Path

    repository = Path(__file__).resolve().parents[2]
    outside = pytester.mkdir("ci-report")
    monkeypatch.chdir(repository)
    result = pytester.runpytest("--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5",
                                "--prune-report", str(outside), "-p", "no:randomly", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7)
    assert f"of lenet5 in {repository / 'baselines'} are not produced" in result.stdout.str()
    assert (outside / "results.csv").is_file()
