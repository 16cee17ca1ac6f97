"""Does the attribution criterion keep the dense model's attribution maps better than L1?

Zhang et al. (2021) claim that attribution pruning retains the original model's attribution
characteristics. For each model and ratio this prunes with ``attribution`` (captum layer
gradient×activation), ``attribution-corr`` (correlation with integrated-gradients maps), ``l1`` and
``random``, and prints the mean Spearman correlation and top-10 % IoU between the dense and the
pruned model's integrated-gradients maps on 16 evaluation images, with top-1 beside them.

    python benchmarks/attribution.py [--models lenet5,lenet5-colour] [--ratios 0.3,0.5]
    (cifar-resnet20 uses the shared weights: --models cifar-resnet20)
"""

from __future__ import annotations

import argparse

import pandas as pd

from common import run_settings
from pytest_prune.pipeline.run import PruneRun

CRITERIA = ("attribution", "attribution-corr", "l1", "random")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5,lenet5-colour")
    parser.add_argument("--ratios", default="0.3,0.5")
    args = parser.parse_args()
    rows = []
    for model in args.models.split(","):
        run = PruneRun(run_settings(model, calibration_images=256))
        for ratio in map(float, args.ratios.split(",")):
            for criterion in CRITERIA:
                r = run.method(criterion, ratio)
                rows.append({"model": model, "ratio": ratio, "criterion": criterion,
                             "top1": r.top1_pruned, "spearman": r.attribution_spearman,
                             "top10_iou": r.attribution_topk_iou})
                print(rows[-1], flush=True)
    table = pd.DataFrame(rows)
    print("\nAttribution retention (integrated gradients, 16 evaluation images), dense vs pruned")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


if __name__ == "__main__":
    main()
