"""Does CAR remove colour-selective first-layer filters first? On the pretrained CIFAR ResNets.

Abbasi-Asl & Yu report that most filters CAR prunes first in AlexNet's first layers are
colour-selective. The embedded LeNet-5 has only 6 first-layer filters; the CIFAR ResNets have 16
(the stem conv, whose channels are the first stage's residual stream). For each model this scores
the group holding the stem filters only and prints:

* each stem filter's response-based colour index (CSI, top-10 of 932 test images, grey = BT.601
  luminance in pixel space) and the weight-based cross-check;
* the order in which greedy CAR removes them (the paper's algorithm: remove the filter whose removal
  costs least on the calibration images, re-score the rest, repeat; loss increase breaks ties),
  against L1's order (smallest filters first);
* the share of colour-selective filters (CSI > 0.25) among the first k removed, for each criterion,
  next to the base rate (what a random choice removes on average) and the chance that a random
  choice removes at least as many (``_p``, hypergeometric).

    python benchmarks/colour.py [--models cifar-resnet20,cifar-resnet56] [--images 256] [--threads 1]
"""

from __future__ import annotations

import argparse
from math import comb

import pandas as pd
import torch

from common import setup, timed
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria.car import CarScorer
from pytest_prune.groups import ChannelGroup
from pytest_prune.pipeline.inspection import first_layer_colour
from pytest_prune.measure.colour import COLOUR_SELECTIVE_THRESHOLD, weight_colour_selectivity
from pytest_prune.plan import PrunePlan


def car_greedy_order(model, group: ChannelGroup, batches) -> list[int]:
    """Greedy CAR removal order of every channel of ``group`` but the last, one per round."""
    scorer = CarScorer(model, [group], batches)
    removed: list[int] = []
    while len(removed) < group.size - 1:
        scores = scorer.index(PrunePlan({group.name: tuple(removed)})).scores()[group.name]
        scores[removed] = float("inf")
        removed.append(int(torch.argmin(scores)))
    return removed


def l1_order(model, group: ChannelGroup) -> list[int]:
    scores = get_criterion("l1").scores(ScoringContext(model, [group], [], seed=0))[group.name]
    return [int(i) for i in torch.argsort(scores, stable=True)]


def chance_of_at_least(hits: int, removed: int, selective: int, filters: int) -> float:
    """P(a random choice of ``removed`` of ``filters`` filters holds ≥ ``hits`` of the ``selective``
    colour-selective ones): the hypergeometric tail, the one-sided p-value of "removed first"."""
    total = comb(filters, removed)
    return sum(comb(selective, h) * comb(filters - selective, removed - h) for h in range(hits, removed + 1)) / total


def colour_rows(model_name: str, images: int) -> tuple[list[dict], list[dict]]:
    s = setup(model_name, "all", images)
    group, layer, csi = first_layer_colour(s.info.model, s.groups, s.data, image_count=932)
    stem = s.info.model.get_submodule(next(m.module for m in group.producers()))
    csi_w = weight_colour_selectivity(stem)[list(group.root_indices)]
    (car, car_s) = timed(lambda: car_greedy_order(s.info.model, group, s.batches))
    l1 = l1_order(s.info.model, group)
    selective = (csi > COLOUR_SELECTIVE_THRESHOLD).tolist()
    base_rate = sum(selective) / len(selective)
    print(f"{model_name}: {group.size} stem filters ({group.root}, read at {layer}), "
          f"{sum(selective)} colour-selective (CSI > {COLOUR_SELECTIVE_THRESHOLD}); "
          f"greedy CAR on {images} images: {car_s:.0f} s", flush=True)
    filters = [
        {"model": model_name, "filter": c, "csi": float(csi[c]), "csi_weights": float(csi_w[c]),
         "car_rank": car.index(c) + 1 if c in car else group.size, "l1_rank": l1.index(c) + 1}
        for c in range(group.size)
    ]
    shares = []
    for k in (2, 4, group.size // 2):
        row = {"model": model_name, "removed": k, "base_rate": base_rate}
        for name, order in (("car", car), ("l1", l1)):
            hits = sum(selective[c] for c in order[:k])
            row[name] = hits / k
            row[f"{name}_p"] = chance_of_at_least(hits, k, sum(selective), group.size)
        shares.append(row)
    return filters, shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="cifar-resnet20,cifar-resnet56")
    parser.add_argument("--images", type=int, default=256, help="calibration images CAR scores on")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads or max(1, torch.get_num_threads()))
    filters, shares = [], []
    for model in filter(None, args.models.split(",")):
        f, s = colour_rows(model, args.images)
        filters.extend(f)
        shares.extend(s)
    pd.set_option("display.width", 200)
    fmt = lambda v: f"{v:.2f}"  # noqa: E731
    print("\nStem filters: colour index (response, weights) and removal rank (1 = removed first)")
    print(pd.DataFrame(filters).to_string(index=False, float_format=fmt))
    print(f"\nShare of colour-selective filters (CSI > {COLOUR_SELECTIVE_THRESHOLD}) among the first k removed")
    print(pd.DataFrame(shares).to_string(index=False, float_format=fmt))


if __name__ == "__main__":
    main()
