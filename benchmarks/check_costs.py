"""What each gate check costs: the seconds of every stage of one method, as the plugin runs it.

The plugin measures lazily: every check needs the method's pruning (scores, plan, surgery, the
compressed model's top-1 and counts, the equivalence check); ``attribution_retention`` adds the
dense attribution maps (once per run) and the compressed model's; ``colour_selectivity`` the dense
first layer's colour index (once per run); ``speedup`` the interleaved latency loop.

    python benchmarks/check_costs.py                      # torchvision:resnet18 on synthetic 3x224x224 data
    python benchmarks/check_costs.py --models torchvision:resnet18,cifar-resnet56   # ResNet-56 needs ../shared/data

One thread, l1 at ratio 0.3, integrated gradients on 16 images (the defaults of the gates).
"""

from __future__ import annotations

import argparse
import time

import torch

from common import run_settings
from pytest_prune.pipeline.run import PruneRun


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def costs(model: str, criterion: str, ratio: float) -> list[tuple[str, str, float]]:
    run = PruneRun(run_settings(model))
    rows = [("load model and data, trace groups", "every check, once per run", timed(run.check_inputs)),
            ("dense top-1 and counts", "every check, once per run",
             timed(lambda: (run.dense_top1, run.dense_count, run.dense_provenance, run.data_provenance)))]
    result = None

    def prune():
        nonlocal result
        result = run.method(criterion, ratio, inspect=False)

    rows.append((f"{criterion}-{ratio:g}: score, plan, surgery, top-1, equivalence", "every check", timed(prune)))
    rows.append(("dense attribution maps", "attribution_retention, once per run", timed(lambda: run.dense_attribution)))
    rows.append(("compressed attribution maps", "attribution_retention",
                 timed(lambda: run.complete(result, "attribution_retention"))))
    rows.append(("dense colour index", "colour_selectivity, once per run", timed(lambda: run.first_layer)))
    rows.append(("colour share of the removed filters", "colour_selectivity",
                 timed(lambda: run.complete(result, "colour_selectivity"))))
    rows.append(("latency loop (dense and compressed, interleaved)", "speedup",
                 timed(lambda: run.complete(result, "speedup"))))
    return [(model, *row) for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="torchvision:resnet18")
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--ratio", type=float, default=0.3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row for model in args.models.split(",") for row in costs(model, args.criterion, args.ratio)]
    print(f"\n{'model':<22} {'stage':<58} {'needed by':<38} {'seconds':>8}")
    for model, stage, needed, seconds in rows:
        print(f"{model:<22} {stage:<58} {needed:<38} {seconds:>8.2f}")


if __name__ == "__main__":
    main()
