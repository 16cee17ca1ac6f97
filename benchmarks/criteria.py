"""Criteria side by side on the pretrained CIFAR ResNets, at equal MACs.

For each model, every criterion of ours and Torch-Pruning's own (group L1, Taylor |w·∂L/∂w|, LAMP,
BatchNorm scale) scores the same channel groups; a plan at the same MACs budget is cut from each
(layer-wise unless the criterion's spec names another allocation); the table gives MACs kept,
one-shot top-1 on the exact 932 test images with and without BatchNorm recalibration (``bn``:
statistics re-estimated on 2,048 JPEG training images), and the scoring time. Then CAR's fast scorer is timed against the straightforward one (one full forward
pass per candidate) on the same channels, with the scores compared for identity.

A criterion is ``NAME`` or ``NAME@ALLOCATION`` (``cpmc@global``): the allocation is always explicit
here, ``layerwise`` unless named, whatever the criterion's natural one (which the plugin uses by
default). ``--budget`` takes a comma list; with Torch-Pruning's importances among the criteria, a
second table gives each of ours minus the best of them, per budget and model, in points.

    python benchmarks/criteria.py [--models cifar-resnet20,cifar-resnet56] [--budget macs:0.59,...]
                                  [--criteria l1,cpmc@global,...] [--recoveries none,bn]
                                  [--scope inner|all] [--calibration 512] [--paired A:B,...]
    python benchmarks/criteria.py --models '' --car-images 64 [--threads 1] [--device cuda]   (CAR timing only)
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

from common import correct_per_image, measure, paired_difference, plan_for_budget, setup, timed
from pytest_prune.pipeline.budget import parse_budget
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria.car import CAR, car_scores
from pytest_prune.plan import ALLOCATIONS, Allocation
from pytest_prune.surgery.reference_importance import REFERENCE_IMPORTANCES, torch_pruning_scores

OURS = ("l1", "taylor", "taylor-plain", "attribution", "meanvar", "cpmc", "bn-error", "recal-error", "car", "random")


def parse_spec(spec: str) -> tuple[str, Allocation]:
    """``cpmc@global`` → ``("cpmc", "global")``; ``l1`` → ``("l1", "layerwise")``."""
    name, _, allocation = spec.strip().partition("@")
    allocation = allocation or "layerwise"
    if allocation not in ALLOCATIONS:
        raise SystemExit(f"criterion {spec!r}: allocation {allocation!r} is unknown; use one of {', '.join(ALLOCATIONS)}")
    return name, allocation  # type: ignore[return-value]


def criterion_rows(
    model: str, budget_texts: tuple[str, ...], scope: str, calibration: int,
    specs: tuple[str, ...] = OURS + REFERENCE_IMPORTANCES, paired: tuple[str, ...] = (),
    recoveries: tuple[str, ...] = ("none", "bn"),
) -> list[dict]:
    """One row per criterion spec and budget; then, for each pair ``"A:B"`` in ``paired`` (both
    among ``specs``), the paired difference A − B of top-1 on the same images, per recovery."""
    s = setup(model, scope, calibration)
    rows = []
    print(f"{model}: dense top-1 {s.dense_top1:.4f}, {len(s.groups)} groups ({scope})", flush=True)
    for budget_text in budget_texts:
        budget = parse_budget(budget_text)
        plans = {}
        for spec in specs:
            name, allocation = parse_spec(spec)
            torch.manual_seed(0)
            if name.startswith("tp-"):
                criterion, ctx = None, None
                scores, seconds = timed(lambda: torch_pruning_scores(s.info.model, s.groups, s.example, name, s.batches))
            else:
                criterion = get_criterion(name)
                if name == "car":
                    # one greedy round per group keeps CAR to minutes on a CPU; the fast scorer is used
                    criterion = CAR(max_samples=128, per_step=1_000)
                ctx = ScoringContext(s.info.model, s.groups, s.batches if criterion.needs_data else [], seed=0)
                scores, seconds = timed(lambda: criterion.scores(ctx))
            (plan, ratio), plan_seconds = timed(
                lambda: plan_for_budget(s, budget, scores, criterion, ctx, allocation))
            plans[spec] = plan
            row = {"model": model, "budget": budget_text, "criterion": spec, "allocation": allocation,
                   "ratio": round(ratio, 4), **measure(s, plan, recoveries)}
            row["score_seconds"] = seconds + plan_seconds
            rows.append(row)
            tops = "  ".join(f"top1 {r} {row[f'top1_{r}']:.4f}" for r in recoveries)
            print(f"  {budget_text} {spec:<16} {tops}  MACs kept {row['macs_kept']:.4f}  "
                  f"{row['score_seconds']:.1f}s", flush=True)
        for pair in paired:
            a, b = pair.split(":")
            for recovery in recoveries:
                diff, error = paired_difference(
                    correct_per_image(s, plans[a], recovery), correct_per_image(s, plans[b], recovery))
                print(f"  {budget_text} paired {a} - {b} ({recovery}): {diff:+.2f} points, "
                      f"standard error {error:.2f}", flush=True)
    return rows


def versus_torch_pruning(table: pd.DataFrame, recovery: str) -> list[tuple[str, pd.DataFrame]]:
    """For each of our criteria: its top-1 minus the best Torch-Pruning importance's, in points,
    one row per budget and one column per model (empty when no tp-* criterion was run)."""
    column = f"top1_{recovery}"
    reference = table[table["criterion"].str.startswith("tp-")]
    if reference.empty:
        return []
    best = reference.groupby(["budget", "model"])[column].max()
    ours = sorted(set(table["criterion"]) - set(reference["criterion"]), key=list(table["criterion"]).index)
    out = []
    for spec in ours:
        mine = table[table["criterion"] == spec].set_index(["budget", "model"])[column]
        diff = (100 * (mine - best)).unstack("model")
        out.append((spec, diff.reindex(index=list(dict.fromkeys(table["budget"])),
                                       columns=list(dict.fromkeys(table["model"])))))
    return out


def car_work(s) -> tuple[float, float]:
    """Conv/linear FLOPs that CAR's fast and straightforward scorers execute on the images they are
    timed on (``s.batches``; aten ops actually run: replayed prefixes cost nothing). Their ratio
    bounds the speed-up any exact scorer gets on a CPU, where a pass costs in proportion to its FLOPs."""
    batches = s.batches
    work = []
    for fast in (True, False):
        with FlopCounterMode(display=False) as counter:
            car_scores(s.info.model, s.groups, batches, fast=fast)
        work.append(float(counter.get_total_flops()))
    return work[0], work[1]


def car_timing(model: str, samples: int, device: str = "cpu") -> dict:
    s = setup(model, "all", samples)
    # on a GPU the fast scorer stacks candidates (``copies``: 2,048 samples a pass on CUDA)
    s.info.model.to(device)
    s.batches = [(x.to(device), y.to(device)) for x, y in s.batches]
    fast, fast_s = timed(lambda: car_scores(s.info.model, s.groups, s.batches, fast=True))
    slow, slow_s = timed(lambda: car_scores(s.info.model, s.groups, s.batches, fast=False))
    identical = all(torch.equal(fast[k], slow[k]) for k in slow)
    fast_flops, slow_flops = car_work(s)
    return {"model": model, "channels": sum(g.size for g in s.groups), "images": samples,
            "device": device, "threads": torch.get_num_threads(), "reference_s": slow_s, "fast_s": fast_s,
            "speedup": slow_s / fast_s, "flops_ratio": slow_flops / fast_flops, "identical": identical}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar-resnet20,cifar-resnet56")
    parser.add_argument("--budget", default="macs:0.59", help="comma list of budgets, e.g. macs:0.5,macs:0.7")
    parser.add_argument("--scope", default="inner", choices=("inner", "all"))
    parser.add_argument("--calibration", type=int, default=512)
    parser.add_argument("--car-images", type=int, default=256)
    parser.add_argument("--skip-car-timing", action="store_true")
    parser.add_argument("--paired", default="", help="comma list of A:B criterion pairs: paired difference A − B")
    parser.add_argument("--recoveries", default="none,bn",
                        help="comma list of recoveries measured after pruning: none, bn (default: none,bn)")
    parser.add_argument("--device", default="cpu", help="where CAR's timing runs (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--criteria", default=",".join(OURS + REFERENCE_IMPORTANCES),
                        help="comma list of ours and tp-l1, tp-taylor, tp-lamp, tp-bnscale, each optionally "
                             "NAME@layerwise or NAME@global (default allocation: layerwise)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    budgets = tuple(filter(None, args.budget.split(",")))
    recoveries = tuple(filter(None, args.recoveries.split(",")))
    rows = []
    for model in filter(None, args.models.split(",")):
        rows.extend(criterion_rows(model, budgets, args.scope, args.calibration, tuple(args.criteria.split(",")),
                                   tuple(filter(None, args.paired.split(","))), recoveries))
    if rows:
        table = pd.DataFrame(rows)
        pd.set_option("display.width", 200)
        print(f"\nCriteria at {args.budget} (allocation per row, scope {args.scope}); top-1 on the exact 932")
        columns = ["model", "budget", "criterion", "allocation", "ratio", "macs_kept"]
        print(table[columns + [f"top1_{r}" for r in recoveries] + ["score_seconds"]]
              .to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        for recovery in recoveries:
            for spec, diff in versus_torch_pruning(table, recovery):
                print(f"\n{spec} top-1 ({recovery}) minus the best Torch-Pruning criterion run, in points")
                print(diff.to_string(float_format=lambda v: f"{v:+.1f}"))
    if not args.skip_car_timing:
        timing = car_timing("cifar-resnet20", args.car_images, args.device)
        print("\nCAR one-shot scores, fast vs straightforward (same run)")
        print(pd.DataFrame([timing]).to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
