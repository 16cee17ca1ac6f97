"""``lsq`` with plain and with residual-aware targets, side by side on the same plans.

The residual-aware fit (pytest_prune/recovery/lsq_residual.py; He et al. 2017, section 4.3) asks
the last layer of each residual branch for the dense *sum* rather than its own dense output. This
measures what that buys: on the pretrained CIFAR ResNets, every channel group allowed (inner
channels and residual streams), one plan per budget from ``recon`` with its natural ``global``
allocation, then ``lsq`` (1,024 calibration images, seed 0) with ``residual=False`` and with
``residual=True``. Columns: top-1 on the exact 932 test images for both, their paired difference
with its standard error (same images, per-image 0/1), MACs kept, and each refit's seconds.

    python benchmarks/lsq_residual.py [--models cifar-resnet20,cifar-resnet56]
                                      [--budgets macs:0.59,macs:0.45] [--criterion recon] [--threads 1]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from allocation import correct
from common import paired_difference, plan_for_budget, setup, timed
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.measure import count_model
from pytest_prune.pipeline.budget import parse_budget
from pytest_prune.recovery.lsq import LeastSquaresReconstruction
from pytest_prune.recovery.pipeline import RecoveryPipeline
from pytest_prune.surgery import prune_model


def run_model(model: str, budgets: list[str], criterion_name: str) -> list[dict]:
    s = setup(model, "all", calibration=512)
    criterion = get_criterion(criterion_name)
    torch.manual_seed(0)
    ctx = ScoringContext(s.info.model, s.groups, s.batches if criterion.needs_data else [], seed=0)
    scores = criterion.scores(ctx)
    rows = []
    for budget in budgets:
        plan, _ = plan_for_budget(s, parse_budget(budget), scores, criterion, ctx, criterion.natural_allocation)
        pruned = prune_model(s.info.model, s.groups, plan, s.example)
        hits, seconds = {}, {}
        for residual in (False, True):
            step = RecoveryPipeline((LeastSquaresReconstruction(residual=residual),))
            result, seconds[residual] = timed(lambda: step.recover(
                s.info.model, pruned, s.data, seed=0, groups=s.groups, plan=plan))
            hits[residual] = correct(result.model, s)
        difference, se = paired_difference(hits[True], hits[False])
        rows.append({
            "model": model, "budget": budget, "method": f"{criterion_name} {criterion.natural_allocation}",
            "macs_kept": count_model(pruned, s.example).macs / s.dense_count.macs,
            "top1_plain": 100 * float(hits[False].mean()), "top1_residual": 100 * float(hits[True].mean()),
            "difference": difference, "se": se,
            "seconds_plain": seconds[False], "seconds_residual": seconds[True],
        })
        print(f"  {model} {budget}: plain {rows[-1]['top1_plain']:.2f} % residual {rows[-1]['top1_residual']:.2f} % "
              f"({difference:+.2f} ± {se:.2f})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar-resnet20,cifar-resnet56")
    parser.add_argument("--budgets", default="macs:0.59,macs:0.45")
    parser.add_argument("--criterion", default="recon")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models.split(","):
        rows += run_model(model, args.budgets.split(","), args.criterion)
    print(f"\nlsq (1,024 images) with plain and residual-aware targets; top-1 % on the exact 932; difference ± se "
          f"in points (paired); {args.threads} thread(s)")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
