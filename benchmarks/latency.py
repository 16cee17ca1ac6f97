"""Does the MACs saving become speed? Eager PyTorch and ONNX Runtime, side by side, with and
without rounding channel counts to a multiple of 8.

    python benchmarks/latency.py                 # the three models below (ResNet-56 needs ../shared/data)
    python benchmarks/latency.py --models torchvision:resnet18 --repeats 30

For each model: ``cifar-resnet56`` (pretrained, CIFAR-10's exact 932, a batch of 32 evaluation
images) at the budget ``macs:0.5``; ``torchvision:resnet18`` and ``torchvision:mobilenet_v2``
(random weights, one 3x224x224 image) at the channel ratio 0.3. ``l1`` scores, layerwise allocation,
planned by the plugin's own functions (``plan_for_budget``, ``plan_at_ratio``), once unrounded and
once with ``--prune-round-to 8``. Latency is single-threaded, warmed up, dense and pruned timed
interleaved in one loop (pytest_prune/measure/latency.py), median of ``--repeats`` rounds with the
interquartile range. ``eff`` is a latency speed-up divided by the MACs speed-up: 1.0 is the physical
limit, the target is 0.8. Where a backend falls short, the layers that lose most are listed: time
above what their MACs predict (``pruned ms - dense ms x pruned MACs / dense MACs``), from forward
hooks (eager) or ORT's profiler (per node).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

from common import setup, timed
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.measure import count_model
from pytest_prune.measure.export import export_onnx, onnx_available, onnx_session, session_runner
from pytest_prune.measure.latency import onnxruntime_speedup, speedup
from pytest_prune.models import load_model
from pytest_prune.modes import torch_threads
from pytest_prune.pipeline.budget import PlanCost, plan_at_ratio, plan_for_budget
from pytest_prune.pipeline.targets import parse_target
from pytest_prune.surgery import find_channel_groups, prune_model

CASES = {"cifar-resnet56": "macs:0.5", "torchvision:resnet18": "0.3", "torchvision:mobilenet_v2": "0.3"}
TARGET_EFFICIENCY = 0.8


def dense_model(spec: str):
    """(model, latency input, channel groups, dense counts)."""
    if spec.startswith("cifar-resnet"):
        s = setup(spec)
        x = torch.cat([x for x, _ in s.data.loader("evaluation", batch_size=32)][:1])
        return s.info.model, x, s.groups, s.dense_count
    model = load_model(spec).model.eval()
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    groups = find_channel_groups(model, x)
    return model, x, groups, count_model(model, x)


def pruned_model(model, x, groups, dense_count, target: str, round_to: int):
    ctx = ScoringContext(model=model, groups=groups)
    criterion, goal = get_criterion("l1"), parse_target(target)
    if isinstance(goal, float):
        plan = plan_at_ratio(criterion, ctx, goal, "layerwise", round_to)
    else:
        plan, _ = plan_for_budget(criterion, ctx, goal, PlanCost(model, groups, dense_count), "layerwise",
                                  round_to=round_to)
    return prune_model(model, groups, plan, x)


def block(name: str) -> str:
    """The block a layer belongs to (``layer1.0.conv1`` -> ``layer1.0``, ``features.2.conv.0.0`` ->
    ``features.2``): eager hooks see layers, ORT sees fused nodes; both are compared per block."""
    return ".".join(name.split(".")[:2])


def module_name(node: str) -> str:
    """The module an ONNX node was exported from: ``/features/features.2/conv/conv.1/conv.1.0/Conv``
    (each level named relative to its parent) -> ``features.2.conv.1.0``."""
    levels: list[str] = []
    for part in node.strip("/").split("/")[:-1]:
        if levels and part.startswith(levels[-1].rsplit(".", 1)[0] + ".") and "." in part:
            levels[-1] = part
        else:
            levels.append(part)
    return ".".join(levels) or node


def block_macs(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    totals: dict[str, int] = defaultdict(int)
    for layer in count_model(model, x).layers:
        totals[block(layer.name)] += layer.macs
    return totals


def eager_block_ms(model: nn.Module, x: torch.Tensor, passes: int) -> dict[str, float]:
    """Median ms per pass of every block, from forward pre/post hooks on its leaf modules (one thread)."""
    per_pass: list[dict[str, float]] = []
    started: dict[str, float] = {}
    handles = []

    def stop(name: str) -> None:
        per_pass[-1][block(name)] = per_pass[-1].get(block(name), 0.0) + time.perf_counter() - started[name]

    for name, module in model.named_modules():
        if name and not list(module.children()):
            handles.append(module.register_forward_pre_hook(
                lambda m, i, name=name: started.__setitem__(name, time.perf_counter())))
            handles.append(module.register_forward_hook(lambda m, i, o, name=name: stop(name)))
    with torch.no_grad(), torch_threads(1):
        for _ in range(passes + 1):  # the first pass warms up
            per_pass.append({})
            model(x)
    for h in handles:
        h.remove()
    return {k: 1000 * statistics.median(p.get(k, 0.0) for p in per_pass[1:]) for k in per_pass[-1]}


def ort_block_ms(model: nn.Module, x: torch.Tensor, passes: int) -> dict[str, float]:
    """Mean ms per pass of every block, from ORT's per-node profile (one thread)."""
    with tempfile.TemporaryDirectory() as folder:
        session = onnx_session(export_onnx(model, x), profile_prefix=str(Path(folder) / "ort"))
        run = session_runner(session, x)
        run()  # warm-up, left out below
        session.end_profiling()
        session = onnx_session(export_onnx(model, x), profile_prefix=str(Path(folder) / "ort2"))
        run = session_runner(session, x)
        for _ in range(passes):
            run()
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            totals[block(module_name(name.removesuffix("_kernel_time")))] += event["dur"] / 1000  # µs → ms
    return {k: v / passes for k, v in totals.items()}


def losers(dense_ms: dict, pruned_ms: dict, dense_macs: dict, pruned_macs: dict, top: int = 3) -> str:
    """The blocks whose pruned time exceeds most what their MACs predict."""
    lost = []
    for name, ms in pruned_ms.items():
        if name in dense_ms and dense_macs.get(name):
            kept = pruned_macs.get(name, 0) / dense_macs[name]
            lost.append((ms - dense_ms[name] * kept, name, dense_ms[name], ms, kept))
    lost.sort(reverse=True)
    return "; ".join(f"{n} {d:.2f}->{p:.2f} ms at MACs x{k:.2f} (+{e:.2f} ms)" for e, n, d, p, k in lost[:top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(CASES))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    if not onnx_available():
        raise SystemExit('benchmarks/latency.py needs the onnx extra: pip install -e ".[onnx]"')
    rows, notes = [], []
    start = time.perf_counter()
    for spec in args.models.split(","):
        (model, x, groups, dense_count), seconds = timed(lambda: dense_model(spec))
        for round_to in (1, 8):
            pruned = pruned_model(model, x, groups, dense_count, CASES[spec], round_to)
            macs_x = dense_count.macs / count_model(pruned, x).macs
            eager = speedup(model, pruned, x, repeats=args.repeats, warmup=args.warmup)
            ort = onnxruntime_speedup(model, pruned, x, repeats=args.repeats, warmup=args.warmup)
            rows.append((spec, CASES[spec], round_to, macs_x, eager, ort))
            dense_macs, pruned_macs = block_macs(model, x), block_macs(pruned, x)
            for backend, timing, per_block in (("eager", eager, eager_block_ms), ("onnxruntime", ort, ort_block_ms)):
                if timing.speedup / macs_x < TARGET_EFFICIENCY:
                    passes = max(5, args.repeats // 2)
                    lost = losers(per_block(model, x, passes), per_block(pruned, x, passes), dense_macs, pruned_macs)
                    notes.append(f"{spec} round-to {round_to}, {backend} (eff {timing.speedup / macs_x:.2f}): {lost}")
        print(f"[{spec}: built in {seconds:.1f} s]", flush=True)
    print(f"\n{len(rows)} rows in {time.perf_counter() - start:.0f} s; {args.repeats} interleaved rounds, "
          f"{args.warmup} warm-up, one thread; torch {torch.__version__}\n")
    print("| model | target | round to | batch | MACs speed-up | eager speed-up | eager / MACs | "
          "ORT speed-up | ORT / MACs | dense eager ms (IQR) | dense ORT ms (IQR) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for spec, target, round_to, macs_x, eager, ort in rows:
        batch = 32 if spec.startswith("cifar") else 1
        print(f"| `{spec}` | {target} | {round_to} | {batch} | {macs_x:.2f}x | {eager.speedup:.2f}x | "
              f"{eager.speedup / macs_x:.2f} | {ort.speedup:.2f}x | {ort.speedup / macs_x:.2f} | "
              f"{eager.dense.median_ms:.2f} ({eager.dense.iqr_ms:.2f}) | {ort.dense.median_ms:.2f} ({ort.dense.iqr_ms:.2f}) |")
    if notes:
        print(f"\nBelow the target of {TARGET_EFFICIENCY}: the layers that lose most (time above what their MACs predict)")
        for note in notes:
            print(f"- {note}")


if __name__ == "__main__":
    main()
