"""Release candidates through the gates: `--prune-candidate` and `PruneRun.candidate`."""

import json
import os
from pathlib import Path

import pytest
import torch

from pytest_prune.pipeline.run import PruneRun

from pytest_prune.pipeline.settings import RunSettings

DATA = Path(os.environ.get("PRUNE_CIFAR10_DIR", Path(__file__).resolve().parents[3] / "shared/data/cifar10"))


def test_candidate_gates_with_baselines(pytester):
    run = PruneRun(RunSettings("lenet5"))
    ours = run.method("l1", 0.5)
    path = pytester.path / "release-1.pt"
    torch.save(ours.pruned_model.state_dict(), path)
    args = ["--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5", "-p", "no:randomly",
            f"--prune-candidate={path}", "--prune-baselines", str(pytester.path / "bl"), "-v"]
    written = pytester.runpytest(*args, "--prune-update-baselines")
    written.assert_outcomes(passed=13)  # 7 checks of l1-0.5, 6 of the candidate (no surgery check)
    out = written.stdout.str()
    assert "candidate::release-1::accuracy_drop" in out
    assert "candidate::release-1::export_equivalence PASSED" in out  # the release survives ONNX export
    stored = json.loads((pytester.path / "bl" / "lenet5" / "candidate-release-1.json").read_text())
    # the candidate is the same network as our in-memory pruning: the same accuracy, exactly
    assert stored["checks"]["accuracy_drop"]["value"] == ours.accuracy_drop
    assert stored["checks"]["macs_reduction"]["value"] == 1 - ours.macs_kept
    pytester.runpytest(*args).assert_outcomes(passed=13)


def test_tampered_candidate_fails_cleanly(pytester):
    run = PruneRun(RunSettings("lenet5"))
    path = pytester.path / "broken.pt"
    torch.save(run.method("l1", 0.5).pruned_model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:-200])  # truncated in transfer
    result = pytester.runpytest("--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5",
                                f"--prune-candidate={path}", "--prune-update-baselines",
                                "--prune-baselines", str(pytester.path / "bl"))
    out = result.stdout.str()
    assert "candidate::broken::accuracy_drop" in out
    assert "broken.pt" in out and "WeightsError" in out
    assert "Traceback" not in out and "torch/serialization.py" not in out


@pytest.fixture(scope="module")
def colour_run() -> PruneRun:
    """lenet5-colour with our l1-0.5 pruning, the network every exported candidate here holds."""
    return PruneRun(RunSettings("lenet5-colour", attribution_method="gradcam"))


@pytest.fixture(scope="module")
def exported(colour_run, tmp_path_factory) -> dict[str, Path]:
    """Our l1-0.5 pruning as torch.export programs: ``static`` with torch.export's default, which
    fixes the batch to the example's (2 images, while evaluation runs 256 at a time), and
    ``dynamic`` with a free batch (``torch.export.Dim``).

    Made and loaded in a module fixture, before any pytester run: pytester's in-process runs drop
    the modules imported since the test began, and torch.export's (one registers a torch library,
    which cannot be registered twice) must not be imported again.
    """
    model = colour_run.method("l1", 0.5, inspect=False).pruned_model.eval()
    folder = tmp_path_factory.mktemp("exported")
    paths = {}
    for batch, shapes in (("static", None), ("dynamic", ({0: torch.export.Dim("batch")},))):
        program = torch.export.export(model, (colour_run.example_input,), dynamic_shapes=shapes)
        paths[batch] = folder / f"{batch}.pt2"
        torch.export.save(program, paths[batch])
        torch.export.load(paths[batch])
    return paths


def candidate_args(pytester, path: Path, *extra: str) -> list[str]:
    return ["--prune-model=lenet5-colour", "--prune-criteria=l1", "--prune-ratios=0.5", "-p", "no:randomly",
            f"--prune-candidate={path}", "--prune-baselines", str(pytester.path / "bl"), "-v",
            "-k", "candidate", *extra]  # only the candidate's gates run


@pytest.mark.parametrize("batch", ["static", "dynamic"])
def test_exported_candidate_gates_with_baselines(pytester, colour_run, exported, batch):
    args = candidate_args(pytester, exported[batch])
    written = pytester.runpytest(*args, "--prune-update-baselines")
    written.assert_outcomes(passed=7, deselected=8)  # no surgery check on a candidate
    assert f"candidate::{batch}::colour_selectivity PASSED" in written.stdout.str()
    # a torch.export program, re-exported to ONNX: ONNX Runtime computes what the program does
    assert f"candidate::{batch}::export_equivalence PASSED" in written.stdout.str()
    stored = json.loads((pytester.path / "bl" / "lenet5-colour" / f"candidate-{batch}.json").read_text())
    ours = colour_run.method("l1", 0.5, inspect=False)
    colour_run.complete(ours, "colour_selectivity")
    # the program is our pruning: its accuracy exactly, and its filters matched to the dense ones
    assert stored["checks"]["accuracy_drop"]["value"] == ours.accuracy_drop
    assert stored["checks"]["macs_reduction"]["value"] == pytest.approx(1 - ours.macs_kept)
    assert stored["checks"]["colour_selectivity"]["value"] == ours.colour_selective_pruned
    assert stored["checks"]["export_equivalence"]["value"] < 1e-5
    compared = pytester.runpytest(*args)
    compared.assert_outcomes(passed=7, deselected=8)
    assert "could not be measured" not in compared.stdout.str()


def test_exported_candidate_with_gradcam_explains_the_dense_last_conv(pytester, colour_run, exported):
    args = candidate_args(pytester, exported["static"], "--prune-attribution=gradcam")
    pytester.runpytest(*args, "--prune-update-baselines").assert_outcomes(passed=7, deselected=8)
    stored = json.loads((pytester.path / "bl" / "lenet5-colour" / "candidate-static.json").read_text())
    ours = colour_run.method("l1", 0.5, inspect=False)
    colour_run.complete(ours, "attribution_retention")
    assert stored["settings"]["attribution"] == "gradcam"
    # the same network explained at the same layer: the same Grad-CAM maps, up to float rounding
    assert stored["checks"]["attribution_retention"]["value"] == pytest.approx(ours.attribution_spearman, abs=1e-6)
    pytester.runpytest(*args).assert_outcomes(passed=7, deselected=8)


@pytest.mark.skipif(not (DATA / "resnet56.th").is_file(), reason=f"pretrained weights not in {DATA}")
def test_torch_pruning_candidate_of_resnet56_gates_with_its_own_accuracy(tmp_path):
    import torch_pruning as tp

    # few attribution images and latency repeats: this test is about accuracy, and CI runs it
    run = PruneRun(RunSettings("cifar-resnet56", weights=str(DATA / "resnet56.th"), data=f"cifar10:{DATA}",
                               attribution_images=2, latency_repeats=2, colour_images=64))
    model = run.info.model
    # A candidate made by Torch-Pruning itself: L1 on each block's inner channel, 30 %.
    candidate = __import__("copy").deepcopy(model)
    inner = [m for n, m in candidate.named_modules() if n.endswith(".conv1") and n.startswith("layer")]
    ignored = [m for m in candidate.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
               and m not in inner]
    pruner = tp.pruner.MetaPruner(candidate, run.example_input, importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.3, ignored_layers=ignored)
    pruner.step()
    candidate.eval()
    from pytest_prune.measure import evaluate

    expected = evaluate(candidate, run.data.evaluation).top1
    path = tmp_path / "tp-resnet56.pt"
    torch.save(candidate.state_dict(), path)
    result = run.candidate(path)
    assert result.top1_pruned == expected  # ±0.0
    assert result.macs_pruned < result.macs_dense
    assert result.match_mean_cosine == pytest.approx(1.0)
