"""What ``recon`` + ``lsq`` (or another criterion) costs a run, with the passes shared and without,
side by side.

A run (pytest_prune.pipeline.run.PruneRun, as the plugin builds it) prunes with ``recon`` at
every ratio and refits each plan with ``lsq``. Two ways, alternating, in one process:

- ``separate``: every target scores anew (one dense pass per ratio) and ``lsq`` takes its own
  dense pass (kept for the next ``lsq`` of the run where it refits the same layers): what a run
  did before the passes were shared;
- ``shared``: the run scores ``recon`` once for all its targets, and that pass also takes
  ``lsq``'s dense capture (pytest_prune.recovery.lsq_shared), so each ``lsq`` runs only its
  pruned pass.

``--criterion taylor`` (iterative: it re-scores between rounds) shares only its first round, the
unpruned model's scores, between the run's targets.

Columns: scoring and recovery seconds summed over the run's methods, their total, the ratio of
totals (separate / shared), and whether every method's compressed weights are equal bit for bit.
The lsq cache is emptied before each run. Medians over ``--repeats``.

    OMP_NUM_THREADS=1 python benchmarks/recon_passes.py [--model cifar-resnet20]
        [--ratios 0.3,0.5,0.7 | macs:0.59,macs:0.45] [--criterion recon] [--recovery lsq] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics

import pandas as pd
import torch

from common import run_settings
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.recovery import lsq_cache


def one_run(model: str, criterion: str, ratios: list, recovery: str, shared: bool) -> tuple[float, float, list[str]]:
    """(scoring seconds, recovery seconds, compressed digests) of one run of ``criterion`` at ``ratios``."""
    lsq_cache._CACHE.clear()
    run = PruneRun(run_settings(model))
    run.recoveries = (recovery,) if shared else ()
    scoring = recovering = 0.0
    digests = []
    for ratio in ratios:
        if not shared:
            run._scores.clear()  # every target scores anew
        result = run.method(criterion, ratio, recovery, inspect=False)
        scoring += result.score_seconds
        recovering += result.recovery_seconds
        digests.append(result.provenance["compressed_digest"])
        print(f"    {result.method}: scoring {result.score_seconds:.2f} s, recovery {result.recovery_seconds:.2f} s", flush=True)
    return scoring, recovering, digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cifar-resnet20")
    parser.add_argument("--ratios", default="0.3,0.5,0.7")
    parser.add_argument("--criterion", default="recon")
    parser.add_argument("--recovery", default="lsq")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ratios = [r if ":" in r else float(r) for r in args.ratios.split(",")]  # fractions or budgets (macs:0.45)
    seen: dict[str, list[tuple[float, float]]] = {"separate": [], "shared": []}
    digests: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for mode in ("separate", "shared"):
            scoring, recovering, digests[mode] = one_run(args.model, args.criterion, ratios, args.recovery, mode == "shared")
            seen[mode].append((scoring, recovering))
            print(f"  {mode}: scoring {scoring:.2f} s, recovery {recovering:.2f} s", flush=True)
    rows = []
    for mode, runs in seen.items():
        scoring = statistics.median(s for s, _ in runs)
        recovering = statistics.median(r for _, r in runs)
        rows.append({"mode": mode, "scoring_s": scoring, "recovery_s": recovering, "total_s": scoring + recovering})
    for row in rows:
        row["ratio"] = rows[0]["total_s"] / row["total_s"]
    print(f"\n{args.criterion} at {args.ratios} + {args.recovery} on {args.model}, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}; compressed weights equal: {digests['separate'] == digests['shared']}")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.2f}"))


if __name__ == "__main__":
    main()
