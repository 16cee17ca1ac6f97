"""Statistics pruning + Tucker-2 (Gong et al. 2020) on two torchvision detectors with random weights.

For ``fasterrcnn_mobilenet_v3_large_320_fpn`` and ``fasterrcnn_resnet50_fpn`` (``weights=None``,
``weights_backbone=None``: nothing is downloaded), :func:`pytest_prune.detection.compress_detector`
prunes the channel groups of the backbone body and the box head by the meanvar natural plan, then
Tucker-2-decomposes the high-dimensional k×k convs of backbone, FPN and RPN head. The table gives,
dense and compressed: ``torch.save`` bytes of the state dict, conv/linear MACs of the forward on one
320×320 and one 384×512 (H×W) image, summed, and the median CPU latency of the forward on the
320×320 image (the two models timed interleaved, warm-up passes excluded). Then it checks that the
compressed detectors return the same structure of outputs as the dense ones on images of three sizes.

The weights are random, so VBMF would see only noise and choose ranks (1, 1): the ranks here are a
fraction (``--ranks 0.5`` keeps half of each mode's rank); pass ``--ranks vbmf`` for trained models.
``fasterrcnn_resnet50_fpn`` is built with ``min_size=320, max_size=512`` (its default resizes every
image to 800 px on the short side, ~6x the MACs), the MobileNet one with its own 320 px default.
Both are built with ``rpn_nms_thresh=1.0``: the RPN then keeps exactly ``rpn.post_nms_top_n``
proposals (1000 and 150) whatever the weights. With the default 0.7, how many random proposals
survive NMS depends on the random weights (dense ResNet-50: 167, compressed: 1000 on the same
image), and the RoI head's cost with it: the compressed detector did 6x the RoI work and timed 0.6x
"faster". The structure check sets ``roi_heads.score_thresh = 0`` so that random weights still
return boxes to compare; MACs and latency keep the default 0.05.

    python benchmarks/detection.py [--detectors mobilenet,resnet50] [--ranks 0.5]
                                   [--prune undecomposed,low-dimensional] [--repeats 10]
                                   [--warmup 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch
from threadpoolctl import threadpool_limits
from torchvision.models import detection

from pytest_prune.detection import compress_detector, detector_macs, output_structure
from pytest_prune.measure import serialised_bytes
from pytest_prune.measure.latency import speedup

DETECTORS = {
    "mobilenet": ("fasterrcnn_mobilenet_v3_large_320_fpn", {}),
    "resnet50": ("fasterrcnn_resnet50_fpn", {"min_size": 320, "max_size": 512}),
}
MACS_SIZES = ((320, 320), (384, 512))  # H×W
STRUCTURE_SIZES = ((320, 320), (384, 512), (240, 400))
LATENCY_SIZE = (320, 320)


def build(key: str) -> torch.nn.Module:
    name, options = DETECTORS[key]
    torch.manual_seed(0)
    builder = getattr(detection, name)
    return builder(weights=None, weights_backbone=None, rpn_nms_thresh=1.0, **options).eval()


def images(sizes, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=generator) for h, w in sizes]


@torch.no_grad()
def same_structure(dense: torch.nn.Module, compressed: torch.nn.Module) -> str:
    """'yes (N boxes)' when both return the same keys, dtypes and trailing dims on every image."""
    models = (dense, compressed)
    thresholds = [m.roi_heads.score_thresh for m in models]
    boxes = 0
    try:
        for m in models:
            m.roi_heads.score_thresh = 0.0
        for image in images(STRUCTURE_SIZES, seed=2):
            ours, theirs = dense([image]), compressed([image])
            if output_structure(ours) != output_structure(theirs):
                return "no"
            boxes += len(theirs[0]["boxes"])
    finally:
        for m, threshold in zip(models, thresholds):
            m.roi_heads.score_thresh = threshold
    return f"yes ({boxes} boxes)"


def rows_for(key: str, ranks, scopes: list[str], repeats: int, warmup: int, threads: int) -> list[dict]:
    dense = build(key)
    dense_macs = detector_macs(dense, images(MACS_SIZES, seed=1)).macs
    dense_bytes = serialised_bytes(dense)
    rows = []
    for scope in scopes:
        start = time.perf_counter()
        compressed, report = compress_detector(dense, ranks=ranks, prune=scope)
        seconds = time.perf_counter() - start
        print(f"{DETECTORS[key][0]}, prune={scope} ({seconds:.1f} s):\n{report.summary()}", flush=True)
        macs = detector_macs(compressed, images(MACS_SIZES, seed=1)).macs
        size = serialised_bytes(compressed)
        timing = speedup(dense, compressed, images([LATENCY_SIZE], seed=3)[0].unsqueeze(0),
                         repeats=repeats, warmup=warmup, threads=threads)
        rows.append({
            "detector": key, "prune": scope,
            "MB dense": dense_bytes / 1e6, "MB comp": size / 1e6, "storage x": size / dense_bytes,
            "GMACs dense": dense_macs / 1e9, "GMACs comp": macs / 1e9, "MACs x": macs / dense_macs,
            "ms dense": timing.dense.median_ms, "ms comp": timing.pruned.median_ms,
            "speed-up": timing.speedup, "same structure": same_structure(dense, compressed),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--detectors", default="mobilenet,resnet50")
    parser.add_argument("--ranks", default="0.5", help="a rank fraction, or vbmf / energy (default 0.5)")
    parser.add_argument("--prune", default="undecomposed,low-dimensional", help="prune scopes, comma-separated")
    parser.add_argument("--repeats", type=int, default=10, help="timed passes per model (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed passes per model first (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
    args = parser.parse_args()
    try:
        ranks: str | float = float(args.ranks)
    except ValueError:
        ranks = args.ranks
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    rows = []
    with threadpool_limits(args.threads):  # numpy's OpenBLAS (VBMF's SVD) too: see tests/test_detection.py
        for key in args.detectors.split(","):
            rows += rows_for(key, ranks, args.prune.split(","), args.repeats, args.warmup, args.threads)
    print(
        f"\nstorage: torch.save(state_dict) bytes; MACs: conv+linear, one 320x320 and one 384x512 (HxW) "
        f"image summed, as resized by each detector's transform; latency: median ms of {args.repeats} "
        f"interleaved passes on one 320x320 image after {args.warmup} warm-up passes, "
        f"{args.threads} thread(s); ranks: {args.ranks}; structure: images "
        + ", ".join(f"{h}x{w}" for h, w in STRUCTURE_SIZES)
    )
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
