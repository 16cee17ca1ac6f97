"""Best top-1 per MAC without SGD: criteria × allocations, each followed by ``lsq``, side by side.

On the pretrained CIFAR ResNets with every channel group allowed (each block's inner channel *and*
the residual streams), at each MACs budget, one row per method:

* the anchors, Torch-Pruning's LAMP and group-L1 importances, layer-wise (``tp-lamp`` also global,
  the allocation LAMP's scores are normalised for);
* ``l1`` and ``recon`` with each allocation: ``layerwise``, ``global`` and ``sensitivity``
  (pytest_prune.sensitivity; its table measured once per criterion on the calibration images under
  ``--sensitivity-recovery`` and reused for every budget);

every plan cut and recovered with ``--recovery`` (default ``lsq``: 1,024 JPEG training images, seed 0,
residual-aware targets; ``lsq:2048`` for more images), once per seed of ``--seeds`` (``lsq``'s
seed draws its sampled positions: on ResNet-56 at ``macs:0.45`` five draws of one plan spread over
a point of top-1, so one seed cannot rank methods closer than that). Columns: top-1 on the exact
932 test images, averaged over the seeds, and its standard deviation across them; the paired
difference against the best anchor of that budget with its standard error (same images; per
image, the share of seeds that got it right), MACs kept (measured on the pruned model), and the
seconds of each step: scoring (once per criterion and model), planning (the budget search; for
``sensitivity`` the first budget also pays the analysis) and ``lsq``.

    python benchmarks/allocation.py [--models cifar-resnet20,cifar-resnet56]
                                    [--budgets macs:0.59,macs:0.45] [--criteria l1,recon]
                                    [--anchors tp-lamp/layerwise,tp-lamp/global,tp-l1/layerwise]
                                    [--allocations layerwise,global,sensitivity]
                                    [--sensitivity-recovery lsq] [--recovery lsq] [--seeds 0]
                                    [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from common import Setup, paired_difference, plan_for_budget, recovered, setup, timed
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.measure import count_model
from pytest_prune.measure.accuracy import batches_of
from pytest_prune.pipeline.budget import PlanCost, parse_budget
from pytest_prune.surgery import prune_model
from pytest_prune.surgery.reference_importance import torch_pruning_scores

ANCHORS = (("tp-lamp", "layerwise"), ("tp-lamp", "global"), ("tp-l1", "layerwise"))


def correct(model: torch.nn.Module, s: Setup) -> torch.Tensor:
    """1.0 where ``model`` is right on an evaluation image, else 0.0."""
    model.eval()
    with torch.no_grad():
        return torch.cat([(model(x).argmax(1) == y).double() for x, y in batches_of(s.data.evaluation, 256)])


class Methods:
    """Scores once per criterion, sensitivity tables once per criterion, plans per budget."""

    def __init__(self, s: Setup, sensitivity_recovery: str):
        self.s = s
        self.cost = PlanCost(s.info.model, s.groups, s.dense_count)
        self.sensitivity_recovery = sensitivity_recovery
        self.scored: dict[str, tuple] = {}  # name → (scores, criterion, ctx, seconds)
        self.tables: dict[str, object] = {}

    def scores(self, name: str) -> tuple:
        if name not in self.scored:
            s = self.s
            torch.manual_seed(0)
            start = time.perf_counter()
            if name.startswith("tp-"):
                scores = torch_pruning_scores(s.info.model, s.groups, s.example, name, s.batches)
                criterion = ctx = None
            else:
                criterion = get_criterion(name)
                ctx = ScoringContext(s.info.model, s.groups, s.batches if criterion.needs_data else [], seed=0)
                scores = criterion.scores(ctx)
            self.scored[name] = (scores, criterion, ctx, time.perf_counter() - start)
        return self.scored[name]

    def plan(self, name: str, allocation: str, budget_text: str):
        scores, criterion, ctx, _ = self.scores(name)
        budget = parse_budget(budget_text)
        if allocation != "sensitivity":
            return plan_for_budget(self.s, budget, scores, criterion, ctx, allocation)[0]
        from pytest_prune.sensitivity import plan_by_sensitivity

        plan, table = plan_by_sensitivity(
            criterion, ctx, budget, self.cost, recovery=self.sensitivity_recovery, batches=self.s.batches,
            scores=scores, table=self.tables.get(name),
        )
        self.tables[name] = table
        return plan


def run_model(model: str, args: argparse.Namespace) -> list[dict]:
    s = setup(model, "all", calibration=512)
    print(f"{model}: dense top-1 {s.dense_top1:.4f} on the exact 932; {len(s.groups)} groups "
          "(inner channels and residual streams)", flush=True)
    methods = Methods(s, args.sensitivity_recovery)
    ours = [(c, a) for c in args.criteria.split(",") if c for a in args.allocations.split(",")]
    anchors = [a for a in ANCHORS if f"{a[0]}/{a[1]}" in args.anchors.split(",")]
    budgets = args.budgets.split(",")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    rows: dict[tuple, dict] = {}  # (budget, criterion, allocation) → row
    plans = {}
    for budget_text in budgets:
        for name, allocation in [*anchors, *ours]:
            seconds_score = methods.scores(name)[3]
            plan, seconds_plan = timed(lambda: methods.plan(name, allocation, budget_text))
            pruned = prune_model(s.info.model, s.groups, plan, s.example)
            plans[budget_text, name, allocation] = plan
            rows[budget_text, name, allocation] = {
                "model": model, "budget": budget_text, "criterion": name, "allocation": allocation,
                "anchor": (name, allocation) in ANCHORS,
                "macs_kept": count_model(pruned, s.example).macs / s.dense_count.macs,
                "seconds_score": seconds_score, "seconds_plan": seconds_plan, "hits": [], "seconds": [],
            }
    # Seeds outermost: each seed's dense capture serves every plan of every budget (lsq_cache).
    for seed in seeds:
        for key, plan in plans.items():
            pruned = prune_model(s.info.model, s.groups, plan, s.example)
            model_lsq, seconds_lsq = recovered(s, pruned, plan, args.recovery, seed=seed)
            r = rows[key]
            r["hits"].append(correct(model_lsq, s))
            r["seconds"].append(seconds_lsq)
            print(f"  {key[0]} {key[1]:8s} {key[2]:11s} seed {seed} top1 {float(r['hits'][-1].mean()):.4f} MACs kept "
                  f"{r['macs_kept']:.3f}  score {r['seconds_score']:.1f}s plan {r['seconds_plan']:.1f}s "
                  f"lsq {seconds_lsq:.1f}s", flush=True)
    out = []
    for budget_text in budgets:
        measured = [r for key, r in rows.items() if key[0] == budget_text]
        for r in measured:  # per image, the share of seeds that got it right: the pairing unit
            hits = torch.stack(r.pop("hits"))  # seeds × images
            r["mean_hits"] = hits.mean(0)
            r["top1_lsq"] = float(hits.mean())
            r["seed_sd"] = 100 * float(hits.mean(1).std()) if len(hits) > 1 else 0.0
            r["seconds_lsq"] = sum(r["seconds"]) / len(r["seconds"])
        best = max((r for r in measured if r["anchor"]), key=lambda r: r["top1_lsq"], default=measured[0])
        for r in measured:
            r["best_anchor"] = f"{best['criterion']}/{best['allocation']}"
            r["vs_best_anchor"], r["se"] = paired_difference(r["mean_hits"], best["mean_hits"])
            out.append(r)
    for name, table in methods.tables.items():
        print(f"  sensitivity table of {name}: {table.passes} partial passes, {table.seconds:.1f} s "
              f"(recovery {table.recovery}, {table.images} images)")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar-resnet20,cifar-resnet56")
    parser.add_argument("--budgets", default="macs:0.59,macs:0.45")
    parser.add_argument("--criteria", default="l1,recon")
    parser.add_argument("--anchors", default=",".join(f"{n}/{a}" for n, a in ANCHORS))
    parser.add_argument("--allocations", default="layerwise,global,sensitivity")
    parser.add_argument("--sensitivity-recovery", default="lsq", choices=("none", "lsq"))
    parser.add_argument("--recovery", default="lsq", help="the recovery after every plan (lsq, lsq:2048)")
    parser.add_argument("--seeds", default="0", help="lsq's seeds (its sampled positions); top-1 is their mean")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for model in args.models.split(","):
        rows += run_model(model, args)
        table = pd.DataFrame(rows)
        pd.set_option("display.width", 240)
        print(f"\nTop-1 (%) after {args.recovery} on the exact 932, mean over lsq seeds {args.seeds} (seed_sd: their "
              f"standard deviation); vs_best_anchor ± se in points (paired per image); seconds per step "
              f"({args.threads} thread(s))")
        columns = ["model", "budget", "criterion", "allocation", "macs_kept", "top1_lsq", "seed_sd", "vs_best_anchor",
                   "se", "seconds_score", "seconds_plan", "seconds_lsq"]
        shown = table[columns].assign(top1_lsq=100 * table["top1_lsq"])  # percent, as the README shows it
        formats = {"top1_lsq": "{:.2f}".format, "seed_sd": "{:.2f}".format, "vs_best_anchor": "{:+.2f}".format,
                   "se": "{:.2f}".format}
        print(shown.to_string(index=False, formatters=formats, float_format=lambda v: f"{v:.3f}"), flush=True)


if __name__ == "__main__":
    main()
