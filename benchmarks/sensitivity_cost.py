"""What the sensitivity analysis costs, and what a cheaper one gives up (issue 16).

With ``--prune-ratios macs:F`` a criterion whose natural allocation is layer-wise (``l1``,
``random``) is split by a sensitivity analysis (pytest_prune.sensitivity), once per criterion:
``1 + G · (1 + F)`` partial passes over ``images`` calibration images. This benchmark runs that
analysis at several image counts and fraction sets side by side, on the pretrained CIFAR ResNets
with every channel group allowed (inner channels and residual streams), and for each one:

* the analysis's seconds and passes (one run each, ``--threads`` threads) and image-passes
  (passes × images: the cost without the machine's speed or load; every pass but the first is
  partial, so it overstates the work alike for every setting of one model);
* the allocation it gives at each budget: per-group fractions removed, and how far they lie from
  the reference setting's (the first of ``--settings``, today's default ``512/0.25,0.5,0.75,0.9``):
  mean and largest absolute difference over the groups, and how many groups differ;
* the top-1 on the exact 932 test images after ``lsq`` (1,024 JPEG training images, seed 0) of
  each allocation, with the paired difference against the reference's and its standard error
  (same images, per-image 0/1).

A setting ``N@O/...`` analyses calibration images ``O .. O+N-1`` instead of the first ``N``: run
as a control (``512@512/0.25,0.5,0.75,0.9``), it says how far the reference's own allocation moves
when only its calibration sample changes -- the noise any cheaper setting is measured against.

    python benchmarks/sensitivity_cost.py [--models cifar-resnet20,cifar-resnet56] [--criterion l1]
        [--settings "512/0.25,0.5,0.75,0.9;256/0.25,0.5,0.75,0.9;...;128/0.5,0.9"] (the default: 512, 256
        and 128 images, each with the four default fractions and with 0.5,0.9; the first is the reference)
        [--budgets macs:0.59,macs:0.45] [--analysis-recovery none] [--threads 1]

``--analysis-recovery none`` is the plugin's default (``--prune-sensitivity-recovery``).
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from allocation import correct
from common import Setup, paired_difference, recovered, setup, timed
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.measure import count_model
from pytest_prune.pipeline.budget import PlanCost, parse_budget
from pytest_prune.sensitivity import allocate, analyse
from pytest_prune.surgery import prune_model

DEFAULT_SETTINGS = ";".join(f"{n}/{f}" for f in ("0.25,0.5,0.75,0.9", "0.5,0.9") for n in (512, 256, 128))


def parse_settings(text: str) -> list[tuple[int, int, tuple[float, ...]]]:
    """``"512/0.25,0.5;128@512/0.5"`` → [(512, 0, (0.25, 0.5)), (128, 512, (0.5,))]: images, the
    first calibration image used (``@``; a control: the same count on other images), fractions."""
    out = []
    for item in text.split(";"):
        images, fractions = item.split("/")
        count, _, offset = images.partition("@")
        out.append((int(count), int(offset or 0), tuple(float(f) for f in fractions.split(","))))
    return out


def calibration_slice(s: Setup, images: int, offset: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    x = torch.cat([b[0] for b in s.batches])[offset:offset + images]
    y = torch.cat([b[1] for b in s.batches])[offset:offset + images]
    return [(x, y)]


def group_fractions(s: Setup, plan) -> list[float]:
    """The fraction of each group's channels the plan removes, in group order."""
    return [len(plan.remove.get(g.name, ())) / g.size for g in s.groups]


def run_model(model: str, args: argparse.Namespace) -> tuple[list[dict], list[str]]:
    s = setup(model, "all", calibration=max(n + o for n, o, _ in args.settings))
    cost = PlanCost(s.info.model, s.groups, s.dense_count)
    criterion = get_criterion(args.criterion)
    ctx = ScoringContext(s.info.model, s.groups, s.batches if criterion.needs_data else [], seed=0)
    scores = criterion.scores(ctx)
    print(f"{model}: dense top-1 {s.dense_top1:.4f} on the exact 932; {len(s.groups)} groups", flush=True)
    hits_of: dict[tuple, torch.Tensor] = {}  # plan (as a key) → per-image hits after lsq
    rows, details, reference = [], [], {}
    for images, offset, fractions in args.settings:
        batches = calibration_slice(s, images, offset)
        table, seconds = timed(lambda: analyse(s.info.model, s.groups, scores, batches, cost,
                                               fractions=fractions, images=images,
                                               recovery=args.analysis_recovery, criterion=criterion.name))
        setting = f"{images}{f'@{offset}' if offset else ''}/{','.join(f'{f:g}' for f in fractions)}"
        print(f"  {setting}: analysis {table.passes} passes, {seconds:.1f} s", flush=True)
        for budget_text in args.budgets:
            plan = allocate(s.groups, scores, table, parse_budget(budget_text), cost)
            key = tuple(sorted((k, tuple(v)) for k, v in plan.remove.items()))
            pruned = prune_model(s.info.model, s.groups, plan, s.example)
            macs_kept = count_model(pruned, s.example).macs / s.dense_count.macs
            if key not in hits_of:
                hits_of[key] = correct(recovered(s, pruned, plan, "lsq")[0], s)
            hits, fractions_now = hits_of[key], group_fractions(s, plan)
            ref_hits, ref_fractions = reference.setdefault(budget_text, (hits, fractions_now))
            gaps = [abs(a - b) for a, b in zip(fractions_now, ref_fractions)]
            diff, se = paired_difference(hits, ref_hits)
            rows.append({
                "model": model, "budget": budget_text, "setting": setting, "passes": table.passes,
                "seconds": seconds, "image_passes": table.passes * table.images, "macs_kept": macs_kept,
                "mean_gap": sum(gaps) / len(gaps),
                "max_gap": max(gaps), "groups_differ": sum(g > 0 for g in gaps),
                "top1_lsq": float(hits.mean()), "vs_ref": diff, "se": se,
            })
            details.append(f"{model} {budget_text} {setting}: " + " ".join(f"{f:.2f}" for f in fractions_now))
            print(f"    {budget_text}: top1 {float(hits.mean()):.4f} vs ref {diff:+.2f} ± {se:.2f}, "
                  f"mean gap {rows[-1]['mean_gap']:.3f}", flush=True)
    return rows, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar-resnet20,cifar-resnet56")
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--settings", default=DEFAULT_SETTINGS, type=parse_settings,
                        help="images/fractions;... the first is the reference")
    parser.add_argument("--budgets", default="macs:0.59,macs:0.45", type=lambda t: t.split(","))
    parser.add_argument("--analysis-recovery", default="none", choices=("none", "lsq"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows, details = [], []
    for model in args.models.split(","):
        more_rows, more_details = run_model(model, args)
        rows, details = rows + more_rows, details + more_details
    pd.set_option("display.width", 240)
    print(f"\nSensitivity analysis ({args.criterion}, recovery {args.analysis_recovery}, {args.threads} thread(s)) "
          "by images/fractions; allocation vs the first setting (gap: |fraction removed| per group); "
          "top-1 after lsq on the exact 932, vs_ref ± se in points (paired)")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nPer-group fractions removed (group order):")
    print("\n".join(details), flush=True)


if __name__ == "__main__":
    main()
