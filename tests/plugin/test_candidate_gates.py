"""Release candidates through the gates: `--prune-candidate` and `PruneRun.candidate`."""

import json
import os
from pathlib import Path

import pytest
import torch

from pytest_prune.run import PruneRun, RunSettings

DATA = Path(os.environ.get("PRUNE_CIFAR10_DIR", Path(__file__).resolve().parents[3] / "shared/data/cifar10"))


def test_candidate_gates_with_baselines(pytester):
    run = PruneRun(RunSettings("lenet5"))
    ours = run.method("l1", 0.5)
    path = pytester.path / "release-1.pt"
    torch.save(ours.pruned_model.state_dict(), path)
    args = ["--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5", "-p", "no:randomly",
            f"--prune-candidate={path}", "--prune-baselines", str(pytester.path / "bl"), "-v"]
    written = pytester.runpytest(*args, "--prune-update-baselines")
    written.assert_outcomes(passed=11)  # 6 checks of l1-0.5, 5 of the candidate (no surgery check)
    out = written.stdout.str()
    assert "candidate::release-1::accuracy_drop" in out
    stored = json.loads((pytester.path / "bl" / "lenet5" / "candidate-release-1.json").read_text())
    # the candidate is the same network as our in-memory pruning: the same accuracy, exactly
    assert stored["checks"]["accuracy_drop"]["value"] == ours.accuracy_drop
    assert stored["checks"]["macs_reduction"]["value"] == 1 - ours.macs_kept
    pytester.runpytest(*args).assert_outcomes(passed=11)


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
