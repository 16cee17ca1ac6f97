"""The gates on a GPU: ``--prune-device=cuda`` gives the CPU run's figures and passes its baselines.

Runs where CUDA is present; skipped, with the reason, everywhere else (the default suite collects
it: ``testpaths = ["tests"]``). Without a GPU, ``tests/core/test_device_reach.py`` checks the same
plumbing by making the CPU play two devices.
"""

import copy
import json

import pytest
import torch

from pytest_prune.criteria.car import car_index, default_copies
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA: these tests run the gates with --prune-device=cuda"
)

# CAR's gates are left out: its scorer is compared on its own below, and its CPU run costs a minute
GATES = ["--prune-model=lenet5", "--prune-criteria=l1,taylor,attribution", "--prune-ratios=0.5",
         "--prune-recovery=none,lsq", "-p", "no:randomly"]
ONE_SAMPLE = 1 / 359 + 1e-9  # lenet5's evaluation split: one image changing its prediction


def _records(folder) -> dict[str, dict]:
    return {r["method"]: r for r in json.loads((folder / "results.json").read_text())["methods"]}


def test_the_cuda_run_passes_the_cpu_baselines_with_the_cpu_figures(pytester):
    baselines = ["--prune-baselines", str(pytester.path / "bl")]
    cpu = pytester.runpytest(*GATES, *baselines, "--prune-update-baselines", "--prune-device=cpu",
                             "--prune-report", str(pytester.path / "cpu"))
    assert cpu.ret == pytest.ExitCode.OK, cpu.stdout.str()
    cuda = pytester.runpytest(*GATES, *baselines, "--prune-device=cuda", "--prune-report", str(pytester.path / "cuda"))
    assert cuda.ret == pytest.ExitCode.OK, cuda.stdout.str()  # every gate within its tolerance
    on_cpu, on_cuda = _records(pytester.path / "cpu"), _records(pytester.path / "cuda")
    assert sorted(on_cpu) == sorted(on_cuda) and len(on_cpu) == 6
    for method, a in on_cpu.items():
        b = on_cuda[method]
        assert abs(a["top1_dense"] - b["top1_dense"]) <= ONE_SAMPLE, method
        assert abs(a["top1_pruned"] - b["top1_pruned"]) <= 3 * ONE_SAMPLE, method
        assert abs(a["attribution_spearman"] - b["attribution_spearman"]) < 0.02, method
    for method in ("l1-0.5", "l1-0.5+lsq"):  # a weight criterion cuts the same channels anywhere
        assert on_cpu[method]["plan_removed"] == on_cuda[method]["plan_removed"]
        assert on_cpu[method]["macs_pruned"] == on_cuda[method]["macs_pruned"]


def test_car_scorer_on_cuda_gives_the_cpu_index():
    run = PruneRun(RunSettings("lenet5", calibration_images=128))
    model, groups, batches = run.info.model, run.groups, run.calibration
    on_cpu = car_index(model, groups, batches)
    gpu_model = copy.deepcopy(model).cuda()
    gpu_batches = [(x.cuda(), y.cuda()) for x, y in batches]
    assert default_copies(gpu_batches) > default_copies(batches)  # more candidates per pass on a GPU
    fast = car_index(gpu_model, groups, gpu_batches)
    reference = car_index(gpu_model, groups, gpu_batches, fast=False)
    step = 1 / on_cpu.samples
    for g in groups:
        for index in (fast, reference):
            # accuracy is counted: equal unless two logits of a sample tie within the rounding
            assert (index.accuracy_drop[g.name] - on_cpu.accuracy_drop[g.name]).abs().max() <= step + 1e-12
            assert torch.allclose(index.loss_increase[g.name], on_cpu.loss_increase[g.name], atol=1e-4)


def test_every_look_and_fine_tuning_run_on_cuda():
    run = PruneRun(RunSettings("lenet5", device="cuda", latency_repeats=3))
    result = run.method("l1", 0.5, "finetune:1")  # with attribution, colour and latency looks
    assert next(result.pruned_model.parameters()).is_cuda
    assert result.latency_pruned_ms > 0 and result.speedup > 0
    assert 0.0 <= result.attribution_spearman <= 1.0
    cpu = PruneRun(RunSettings("lenet5")).method("l1", 0.5, "finetune:1", inspect=False)
    assert abs(result.top1_pruned - cpu.top1_pruned) < 0.03  # one epoch from the same start
