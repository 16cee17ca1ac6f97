"""Portability: the same methods measured with the native kernels and with another CPU's rounding.

``ATEN_CPU_CAPABILITY=default`` makes PyTorch run its non-vectorised CPU kernels: reductions then sum
in another order and round differently, as on a processor with another vector width. This benchmark
measures every method twice, once per kernel setting, each in its own process from a cold start, and
prints for each model and method whether the plan (which channels go) is the same, and how far each
gated value moved. The last table is the largest move of each check over all methods: the figure
each default tolerance in ``pytest_prune/gating/checks.py`` is set against.

    python benchmarks/portability.py                       # lenet5 and lenet5-colour: every committed baseline
    python benchmarks/portability.py --models cifar-resnet20 --ratios 0.3,0.5   # needs ../shared/data

Methods: for the embedded models, those of their committed baselines (``baselines/<model>/``); for a
CIFAR ResNet, every data-driven criterion (taylor, taylor-plain, attribution, attribution-corr, car,
recal-error) and l1 at ``--ratios``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA_DRIVEN = ("taylor", "taylor-plain", "attribution", "attribution-corr", "car", "recal-error")
# Kernel settings, each a stand-in for another CPU. ATEN_CPU_CAPABILITY=default changes PyTorch's
# own kernels only; convolutions (oneDNN) and matrix products (MKL) dispatch on their own, so
# "sse4" also caps those at SSE4 (a 2008 processor): the strongest rounding change one machine gives.
KERNELS: dict[str, dict[str, str]] = {
    "native": {},
    "default": {"ATEN_CPU_CAPABILITY": "default"},
    "sse4": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41",
             "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
}


def methods_of(model: str, ratios: list[str]) -> list[tuple[str, str | None, str]]:
    from pytest_prune.gating.baselines import BaselineStore
    from pytest_prune.pipeline.targets import parse_method_id

    if model.startswith("cifar-resnet"):
        return [(c, r, "none") for c in ("l1",) + DATA_DRIVEN for r in ratios]
    specs = [parse_method_id(m) for m in BaselineStore(ROOT / "baselines").methods(model)]
    return [(s.criterion, s.target, s.recovery) for s in specs]


def measure(model: str, ratios: list[str], out: Path) -> None:
    """Child process: measure every method of ``model`` under this process's kernels, as JSON."""
    import torch
    from common import run_settings

    from pytest_prune.pipeline.run import PruneRun

    torch.set_num_threads(1)  # the two children run side by side on a shared machine
    run = PruneRun(run_settings(model, calibration_images=256))
    rows = {}
    for criterion, target, recovery in methods_of(model, ratios):
        r = run.method(criterion, target, recovery)
        rows[r.method] = {
            "plan": (r.provenance.get("plan") or {}).get("digest"),
            "compressed": r.provenance.get("compressed_digest"),
            "checks": r.checks(),
        }
        # written after every method: a long run stopped early still leaves what it measured
        record = {"dense": run.dense_provenance, "data": run.data_provenance, "methods": rows}
        out.write_text(json.dumps(record, indent=1), encoding="utf-8")


def compare(model: str, native: dict, default: dict) -> tuple[list[list[str]], dict[str, float], int]:
    rows, worst, flips = [], {}, 0
    for method, a in native["methods"].items():
        b = default["methods"][method]
        same_plan = a["plan"] == b["plan"]
        flips += not same_plan
        cells = [model, method, "same" if same_plan else "DIFFERS",
                 "same" if a["compressed"] == b["compressed"] else "differs"]
        for check in sorted(set(a["checks"]) | set(b["checks"])):
            if check in a["checks"] and check in b["checks"]:
                delta = abs(a["checks"][check] - b["checks"][check])
                worst[check] = max(worst.get(check, 0.0), delta)
                cells.append(f"{check}={delta:.2g}")
        rows.append(cells)
    return rows, worst, flips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5,lenet5-colour")
    parser.add_argument("--ratios", default="0.3,0.5,0.7", help="ratios of the CIFAR ResNets' methods")
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    ratios = args.ratios.split(",")
    if args.child:
        measure(args.child[0], ratios, Path(args.child[1]))
        return
    worst_all: dict[str, dict[str, float]] = {}
    totals: dict[str, int] = {}
    flips_all: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        for model in args.models.split(","):
            outs, procs = {}, []
            for kernel, values in KERNELS.items():
                env = {k: v for k, v in os.environ.items() if k not in KERNELS["sse4"]}
                env.update(values)
                outs[kernel] = Path(folder) / f"{model}-{kernel}.json"
                command = [sys.executable, __file__, "--ratios", args.ratios, "--child", model, str(outs[kernel])]
                procs.append(subprocess.Popen(command, env=env))
            if any(p.wait() for p in procs):
                sys.exit(f"measuring {model} failed")
            measured = {k: json.loads(outs[k].read_text()) for k in KERNELS}
            native = measured["native"]
            for kernel in list(KERNELS)[1:]:
                other = measured[kernel]
                print(f"\n{model}, native vs {kernel}: dense top-1 {native['dense']['top1']:.4%} / "
                      f"{other['dense']['top1']:.4%}; dense digest {native['dense']['digest']} / "
                      f"{other['dense']['digest']}; data digests "
                      f"{'same' if native['data'] == other['data'] else 'DIFFER'}")
                rows, worst, flips = compare(model, native, other)
                print(f"{'model':<15} {'method':<24} {'plan':<8} {'weights':<8} |native - {kernel}| per check")
                for cells in rows:
                    print(f"{cells[0]:<15} {cells[1]:<24} {cells[2]:<8} {cells[3]:<8} {' '.join(cells[4:])}")
                totals[kernel] = totals.get(kernel, 0) + len(rows)
                flips_all[kernel] = flips_all.get(kernel, 0) + flips
                for check, delta in worst.items():
                    worst_all.setdefault(kernel, {})[check] = max(worst_all.get(kernel, {}).get(check, 0.0), delta)
    others = list(KERNELS)[1:]
    print(f"\nmodels: {args.models}")
    for kernel in others:
        print(f"plans that differ, native vs {kernel}: {flips_all.get(kernel, 0)} of {totals.get(kernel, 0)} methods")
    print(f"{'check':<24} " + " ".join(f"{'max |native - ' + k + '|':>24}" for k in others))
    for check in sorted({c for w in worst_all.values() for c in w}):
        print(f"{check:<24} " + " ".join(f"{worst_all.get(k, {}).get(check, 0.0):>24.3g}" for k in others))

if __name__ == "__main__":
    main()
