"""The seed papers' headline claims, measured on the pretrained CIFAR ResNets.

**Part A — CAR on one layer** (Abbasi-Asl & Yu 2017, paper 003 in ``papers.md``: on AlexNet, pruning
half the filters of conv1 or conv2 alone, CAR is 26 and 20 points above the best other scheme). For
each model and each of the first prunable layers, half of that ONE channel group goes, the rest of
the network intact, chosen by ``car`` (greedy, layer-wise: the lowest CAR removed, the rest re-scored,
at most 8 rounds; accuracy on the first ``--car-images`` JPEG training images), ``l1``, Torch-Pruning's
LAMP and ``random`` (the mean of seeds 0, 1, 2). The stem ``conv1`` is not a layer on its own: its
group is the residual stream of stage 1 (every block's ``conv2``/``bn2`` of stage 1 produces the same
channels, and the option-A shortcut pads them into the wider streams of stages 2 and 3), so halving it
halves that stream everywhere. Top-1 on the exact 932 one-shot (as the paper) and after ``bn``
(BatchNorm statistics re-estimated on 2,048 JPEG training images), and CAR minus the best baseline of
that row with its paired standard error (same images, per-image 0/1; random's per-image value is
its mean over the seeds).

**Part B — attribution retention** (Zhang et al. 2021, paper 000: attribution pruning keeps the
dense model's attribution characteristics). On ``cifar-resnet56``, each block's inner channel pruned
layer-wise at each MACs budget (the plan machinery of ``benchmarks/criteria.py``), by ``attribution``,
``attribution-corr``, ``l1``, Torch-Pruning's group L1 and ``random`` (seed 0), every plan followed by
``bn``; integrated gradients (captum, 32 steps, black baseline, the dense model's predicted class) on
the first ``--images`` exact test images, the same for every model: mean Spearman of dense vs pruned
maps, mean top-10 % IoU, top-1; then ``attribution`` minus Torch-Pruning L1 in mean Spearman with the
paired standard error over the per-image values. Calibration: ``--calibration`` JPEG training images.

    python benchmarks/headline.py [--part a|b|all] [--models cifar-resnet20,cifar-resnet56]
                                  [--layers 5] [--car-images 128] [--seeds 3]
                                  [--budgets macs:0.75,macs:0.59,macs:0.45] [--images 64]
                                  [--calibration 512] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import pandas as pd
import torch

from allocation import correct
from common import Setup, paired_difference, plan_for_budget, recovered, setup, timed
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria.car import CAR
from pytest_prune.measure import count_model
from pytest_prune.measure.attribution import attribution_maps, attribution_retention, predicted_classes
from pytest_prune.pipeline.budget import parse_budget
from pytest_prune.plan import PrunePlan, plan_from_scores
from pytest_prune.surgery import prune_model
from pytest_prune.surgery.reference_importance import torch_pruning_scores

LAYERS = ("conv1", "layer1.0.conv1", "layer1.1.conv1", "layer1.2.conv1", "layer2.0.conv1")
BASELINES = ("l1", "tp-lamp", "random")
RETENTION_CRITERIA = ("attribution", "attribution-corr", "l1", "tp-l1", "random")
RECOVERIES = ("none", "bn")


def hits_after(s: Setup, plan: PrunePlan) -> dict[str, torch.Tensor]:
    """Per-image 0/1 correctness of ``plan`` cut from the dense model, one-shot and after ``bn``."""
    pruned = prune_model(s.info.model, s.groups, plan, s.example)
    return {recovery: correct(recovered(s, pruned, plan, recovery)[0], s) for recovery in RECOVERIES}


def single_layer_plans(s: Setup, layer: str, car_images: int, seeds: int, lamp: dict) -> dict[str, list[PrunePlan]]:
    """Half of ``layer``'s group removed by each criterion (random: one plan per seed)."""
    group = next(g for g in s.groups if g.name == layer)
    ctx = ScoringContext(s.info.model, [group], s.batches, seed=0)
    half = 0.5
    plans = {
        # one removal per greedy round for a 16-channel group (8 rounds), two for 32 (max_rounds 8)
        "car": [CAR(max_samples=car_images).plan(ctx, half)],
        "l1": [plan_from_scores([group], get_criterion("l1").scores(ctx), half)],
        "tp-lamp": [plan_from_scores([group], {group.name: lamp[group.name]}, half)],
    }
    random = get_criterion("random")
    plans["random"] = [plan_from_scores([group], random.scores(ScoringContext(s.info.model, [group], seed=k)), half)
                       for k in range(seeds)]
    return plans


def part_a_rows(model: str, layers: int, car_images: int, seeds: int, calibration: int) -> list[dict]:
    s = setup(model, "all", calibration)
    print(f"{model}: dense top-1 {s.dense_top1:.4f}", flush=True)
    lamp = torch_pruning_scores(s.info.model, s.groups, s.example, "tp-lamp", s.batches)
    missing = [layer for layer in LAYERS[:layers] if layer not in {g.name for g in s.groups}]
    if missing:
        raise SystemExit(f"{model} has no channel group {', '.join(missing)}: Part A is for the CIFAR ResNets")
    rows = []
    for layer in LAYERS[:layers]:
        group = next(g for g in s.groups if g.name == layer)
        start = time.perf_counter()
        plans = single_layer_plans(s, layer, car_images, seeds, lamp)
        car_seconds = time.perf_counter() - start
        hits = {}
        for name, options in plans.items():
            measured = [hits_after(s, plan) for plan in options]
            hits[name] = {r: torch.stack([m[r] for m in measured]).mean(0) for r in RECOVERIES}
        # a group with more than one conv+BN pair of producers is a residual stream, not one layer
        row = {"model": model, "layer": layer, "channels": f"{plans['car'][0].count()}/{group.size}",
               "producers": len(group.producers())}
        for recovery in RECOVERIES:
            for name in plans:
                row[f"{name}_{recovery}"] = 100 * float(hits[name][recovery].mean())
            best = max(BASELINES, key=lambda b: row[f"{b}_{recovery}"])
            row[f"best_{recovery}"] = best
            row[f"car_vs_best_{recovery}"], row[f"se_{recovery}"] = paired_difference(
                hits["car"][recovery], hits[best][recovery])
        row["seconds"] = time.perf_counter() - start
        row["car_seconds"] = car_seconds
        rows.append(row)
        print(f"  {layer}: " + "  ".join(f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}"
                                         for k, v in row.items() if k not in ("model", "layer")), flush=True)
    return rows


def retention_rows(model: str, budgets: list[str], images: int, calibration: int) -> tuple[list[dict], list[dict]]:
    """One row per (budget, criterion); then ``attribution`` − ``tp-l1`` in Spearman per budget."""
    s = setup(model, "inner", calibration)
    dense = s.info.model
    pictures = s.data.evaluation_images(images)
    targets = predicted_classes(dense, pictures)
    dense_maps, dense_seconds = timed(lambda: attribution_maps(dense, pictures, targets, normalise=s.data.normalise))
    print(f"{model}: dense top-1 {s.dense_top1:.4f}, {len(s.groups)} inner groups; dense maps of {images} "
          f"images in {dense_seconds:.1f}s", flush=True)
    scored = {}
    for name in RETENTION_CRITERIA:
        torch.manual_seed(0)
        if name.startswith("tp-"):
            criterion = ctx = None
            scores, seconds = timed(lambda: torch_pruning_scores(dense, s.groups, s.example, name, s.batches))
        else:
            criterion = get_criterion(name)
            ctx = ScoringContext(dense, s.groups, s.batches if criterion.needs_data else [], seed=0)
            scores, seconds = timed(lambda: criterion.scores(ctx))
        scored[name] = (scores, criterion, ctx, seconds)
        print(f"  scored {name} in {seconds:.1f}s", flush=True)
    rows, pairs = [], []
    for budget_text in budgets:
        per_image = {}
        for name, (scores, criterion, ctx, seconds) in scored.items():
            plan, ratio = plan_for_budget(s, parse_budget(budget_text), scores, criterion, ctx, "layerwise")
            pruned = prune_model(dense, s.groups, plan, s.example)
            macs_kept = count_model(pruned, s.example).macs / s.dense_count.macs
            model_bn, _ = recovered(s, pruned, plan, "bn")
            kept, ig_seconds = timed(lambda: attribution_retention(
                None, model_bn, pictures, targets=targets, dense_maps=dense_maps, normalise=s.data.normalise))
            per_image[name] = torch.tensor(kept.spearman, dtype=torch.float64)
            rows.append({"model": model, "budget": budget_text, "criterion": name, "ratio": round(ratio, 4),
                         "macs_kept": macs_kept, "top1_bn": 100 * float(correct(model_bn, s).mean()),
                         "spearman": kept.spearman_mean, "top10_iou": kept.topk_iou_mean,
                         "score_s": seconds, "ig_s": ig_seconds})
            print(f"  {budget_text} {name:<16} top1(bn) {rows[-1]['top1_bn']:.2f}  Spearman {kept.spearman_mean:.3f}"
                  f"  IoU {kept.topk_iou_mean:.3f}  MACs kept {macs_kept:.3f}", flush=True)
        d = per_image["attribution"] - per_image["tp-l1"]
        pairs.append({"model": model, "budget": budget_text, "attribution_minus_tp_l1": float(d.mean()),
                      "se": float(d.std()) / math.sqrt(len(d)), "images": len(d)})
        print(f"  {budget_text} Spearman attribution - tp-l1: {pairs[-1]['attribution_minus_tp_l1']:+.3f} "
              f"(SE {pairs[-1]['se']:.3f})", flush=True)
    return rows, pairs


def markdown(table: pd.DataFrame, digits: int) -> str:
    """``table`` as a GitHub markdown table, floats to ``digits`` places (pandas' ``to_markdown``
    needs ``tabulate``, which the project does not depend on)."""
    cells = [[f"{v:.{digits}f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, table.columns)) + " |", "|" + " --- |" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def show(title: str, table: pd.DataFrame, digits: int = 2) -> None:
    print(f"\n{title}\n")
    print(markdown(table, digits), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", default="all", choices=("a", "b", "all"))
    parser.add_argument("--models", default="cifar-resnet20,cifar-resnet56", help="Part A's models")
    parser.add_argument("--layers", type=int, default=len(LAYERS), help=f"Part A: the first N of {', '.join(LAYERS)}")
    parser.add_argument("--car-images", type=int, default=128, help="Part A: CAR's calibration images")
    parser.add_argument("--seeds", type=int, default=3, help="Part A: random seeds averaged")
    parser.add_argument("--retention-model", default="cifar-resnet56", help="Part B's model")
    parser.add_argument("--budgets", default="macs:0.75,macs:0.59,macs:0.45", help="Part B's budgets")
    parser.add_argument("--images", type=int, default=64, help="Part B: images attributed")
    parser.add_argument("--calibration", type=int, default=512, help="JPEG training images for scoring")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = "python benchmarks/headline.py " + " ".join(sys.argv[1:])
    pd.set_option("display.width", 240)
    if args.part in ("a", "all"):
        start = time.perf_counter()
        rows = []
        for model in filter(None, args.models.split(",")):
            rows += part_a_rows(model, args.layers, args.car_images, args.seeds, args.calibration)
        table = pd.DataFrame(rows)
        for recovery in RECOVERIES:
            columns = ["model", "layer", "channels", "producers", *(f"{n}_{recovery}" for n in ("car", *BASELINES)),
                       f"best_{recovery}", f"car_vs_best_{recovery}", f"se_{recovery}"]
            show(f"Part A, half of one group's channels, top-1 % on the exact 932 ({recovery}; CAR "
                 f"{args.car_images} images, random mean of {args.seeds} seeds); `{command}`", table[columns])
        show("Part A seconds per layer (all criteria and measurements; CAR's planning alone)",
             table[["model", "layer", "seconds", "car_seconds"]], 1)
        print(f"Part A: {time.perf_counter() - start:.0f} s", flush=True)
    if args.part in ("b", "all"):
        start = time.perf_counter()
        rows, pairs = retention_rows(args.retention_model, list(filter(None, args.budgets.split(","))),
                                     args.images, args.calibration)
        show(f"Part B, attribution retention after `bn` (integrated gradients, {args.images} images, inner "
             f"channels, layer-wise); `{command}`", pd.DataFrame(rows), 3)
        show("Part B, mean Spearman attribution − Torch-Pruning L1 (paired over images)", pd.DataFrame(pairs), 3)
        print(f"Part B: {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
