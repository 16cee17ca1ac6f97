"""Recovery after pruning on the pretrained CIFAR ResNet-56: what a team ships, not one-shot numbers.

For each criterion (ours: ``l1`` and the best of ours from benchmarks/criteria.py; Torch-Pruning's
best, ``tp-lamp``) at each MACs budget, the same layer-wise plan (each block's inner channel) is cut
once and then recovered with every recovery; the table gives top-1 on the exact 932 test images and
the seconds each recovery took. Calibration for ``bn`` and ``lsq``: 2,048 and 1,024 JPEG training
images (the steps' defaults). ``finetune:1`` is one epoch over the 50,000 JPEG training images: on a
2-core CPU about half an hour per run, so it runs only with ``--finetune``.

    python benchmarks/recovery.py [--budgets macs:0.59,macs:0.45] [--criteria l1,cpmc,tp-lamp]
                                  [--finetune]
"""

from __future__ import annotations

import argparse

import pandas as pd
import torch

from common import measure, plan_for_budget, setup, timed
from pytest_prune.pipeline.budget import parse_budget
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.surgery.reference_importance import torch_pruning_scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cifar-resnet56")
    parser.add_argument("--budgets", default="macs:0.59,macs:0.45")
    parser.add_argument("--criteria", default="l1,cpmc,tp-lamp")
    parser.add_argument("--scope", default="inner", choices=("inner", "all"))
    parser.add_argument("--finetune", action="store_true")
    args = parser.parse_args()
    recoveries = ["none", "bn", "lsq", "lsq+bn"] + (["finetune:1"] if args.finetune else [])
    s = setup(args.model, args.scope, calibration=512)
    print(f"{args.model}: dense top-1 {s.dense_top1:.4f} on the exact 932; {len(s.groups)} groups ({args.scope})")
    rows = []
    for budget_text in args.budgets.split(","):
        budget = parse_budget(budget_text)
        for name in args.criteria.split(","):
            torch.manual_seed(0)
            if name.startswith("tp-"):
                criterion, ctx = None, None
                scores = torch_pruning_scores(s.info.model, s.groups, s.example, name, s.batches)
            else:
                criterion = get_criterion(name)
                ctx = ScoringContext(s.info.model, s.groups, s.batches if criterion.needs_data else [], seed=0)
                scores = criterion.scores(ctx)
            (plan, ratio), _ = timed(lambda: plan_for_budget(s, budget, scores, criterion, ctx))
            row = {"budget": budget_text, "criterion": name, **measure(s, plan, recoveries)}
            rows.append(row)
            print("  " + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  flush=True)
    table = pd.DataFrame(rows)
    pd.set_option("display.width", 220)
    print(f"\nTop-1 on the exact 932 after each recovery (dense {s.dense_top1:.4f}); seconds per recovery")
    columns = ["budget", "criterion", "macs_kept"] + [f"top1_{r}" for r in recoveries] + [
        f"seconds_{r}" for r in recoveries if r != "none"
    ]
    print(table[columns].to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
