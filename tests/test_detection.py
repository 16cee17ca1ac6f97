"""Detectors: the compressed detector still detects, is smaller, and mAP is measured right.

The compression tests use ``fasterrcnn_mobilenet_v3_large_320_fpn`` with random weights (nothing is
downloaded) and ``box_score_thresh=0`` so that random weights still return boxes. The mAP tests use
synthetic images with known boxes and two stand-in detectors whose right answer is known: one reads
the boxes off the image (mAP 1), one puts each box beside its object (mAP 0).
"""

from __future__ import annotations

import copy

import pytest
import torch
from threadpoolctl import threadpool_limits
from torch import nn
from torchvision.models.detection import fasterrcnn_mobilenet_v3_large_320_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

from pytest_prune.detection import (
    compress_detector,
    detection_map,
    detector_macs,
    output_structure,
)
from pytest_prune.errors import PruneError, SpecError
from pytest_prune.modes import torch_threads
from pytest_prune.measure import serialised_bytes

SIZES = ((320, 320), (256, 384))  # H×W


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch and one BLAS thread for the whole module. conftest's ``one_torch_thread`` is per
    test, and module-scoped fixtures (the detectors below) are set up before it; and numpy's
    OpenBLAS has threads of its own: two of them spinning on a shared 2-core CPU made its SVD of a
    256×2304 unfolding (VBMF) take 3 s instead of 0.04 s."""
    with torch_threads(1), threadpool_limits(1):
        yield


def image(h: int, w: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def dense() -> nn.Module:
    torch.manual_seed(0)
    return fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0).eval()


@pytest.fixture(scope="module")
def compressed(dense):
    before = {k: v.clone() for k, v in dense.state_dict().items()}
    model, report = compress_detector(dense, ranks=0.5)
    after = dense.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    return model, report


@torch.no_grad()
def test_compressed_detector_returns_boxes_labels_scores_like_the_dense_one(dense, compressed):
    model, _ = compressed
    for h, w in SIZES:
        x = image(h, w)
        out = model([x])
        assert isinstance(out, list) and len(out) == 1
        assert output_structure(out) == output_structure(dense([x]))
        boxes, labels, scores = out[0]["boxes"], out[0]["labels"], out[0]["scores"]
        assert boxes.shape[0] > 0 and boxes.shape == (labels.shape[0], 4) == (scores.shape[0], 4)
        assert bool((boxes[:, 0::2] <= w).all() and (boxes[:, 1::2] <= h).all() and (boxes >= 0).all())


def test_storage_and_macs_go_down_and_the_report_says_where(dense, compressed):
    model, report = compressed
    images = [image(h, w) for h, w in SIZES]
    assert serialised_bytes(model) < 0.6 * serialised_bytes(dense)
    assert detector_macs(model, images).macs < 0.6 * detector_macs(dense, images).macs
    parts = {p.name: p for p in report.parts}
    assert parts["backbone.body"].channels_removed > 0
    assert parts["roi_heads.box_head+box_predictor"].channels_removed > 0
    # the box head's hidden units were pruned; its outputs (91 classes, 91 boxes) were not
    assert model.roi_heads.box_head.fc6.out_features < 1024
    assert model.roi_heads.box_predictor.cls_score.out_features == 91
    assert "rpn.head.conv.0.0" in report.decomposition.decomposed
    assert "Tucker-2: 3 convs decomposed" in report.summary()


def test_detector_macs_sums_the_images_and_counts_the_resize(dense):
    one = detector_macs(dense, [image(320, 320)]).macs
    # 160×160 is resized to 320×320 by the detector's transform: same MACs as a 320×320 image
    assert detector_macs(dense, [image(160, 160, seed=1)]).macs == one
    assert detector_macs(dense, [image(320, 320), image(320, 320, seed=1)]).macs == 2 * one


def test_low_dimensional_scope_leaves_the_box_head_and_vbmf_is_selectable(dense):
    model, report = compress_detector(dense, ranks="vbmf", prune="low-dimensional")
    parts = {p.name: p for p in report.parts}
    assert parts["roi_heads.box_head+box_predictor"].channels_removed == 0
    assert model.roi_heads.box_head.fc6.out_features == 1024
    assert 0 < parts["backbone.body"].channels_removed
    assert report.decomposition.rule == "vbmf"


def test_a_detector_with_frozen_batchnorm_is_pruned_like_one_with_batchnorm(dense):
    # torchvision builds FrozenBatchNorm2d into a detector whenever it loads weights
    plain = copy.deepcopy(dense)
    generator = torch.Generator().manual_seed(0)
    for m in plain.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
    frozen = copy.deepcopy(plain)
    for name, m in list(frozen.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            replacement = FrozenBatchNorm2d(m.num_features, eps=m.eps)
            replacement.load_state_dict(m.state_dict())
            frozen.set_submodule(name, replacement)
    ours, report = compress_detector(frozen, ranks=0.5)
    reference, _ = compress_detector(plain, ranks=0.5)
    assert report.channels_removed > 0
    body = ours.backbone.body
    assert not any(isinstance(m, nn.BatchNorm2d) for m in body.modules())
    x = image(320, 320).unsqueeze(0)
    with torch.no_grad():
        got, expected = body(x), reference.backbone.body(x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_bad_arguments_raise_our_errors(dense):
    with pytest.raises(SpecError, match="prune='everything'"):
        compress_detector(dense, prune="everything")  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="C×H×W"):
        compress_detector(dense, example_image=torch.rand(1, 3, 64, 64))
    with pytest.raises(SpecError, match="at least one image"):
        detector_macs(dense, [])


# ---- mAP on synthetic images with known boxes ------------------------------------------------


def synthetic_batches() -> list[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    """Two batches of 2 black images; object k (class k+1) is a bright rectangle in channel k."""
    boxes = [
        [(4, 6, 20, 30), (30, 10, 60, 40)],
        [(10, 10, 50, 20), (2, 40, 12, 62)],
        [(0, 0, 32, 32), (33, 33, 63, 63)],
        [(20, 5, 40, 60), (45, 45, 55, 55)],
    ]
    samples = []
    for per_image in boxes:
        x = torch.zeros(3, 64, 64)
        for k, (x1, y1, x2, y2) in enumerate(per_image):
            x[k, y1:y2, x1:x2] = 1.0
        target = {"boxes": torch.tensor(per_image, dtype=torch.float32), "labels": torch.tensor([1, 2])}
        samples.append((x, target))
    return [([a[0] for a in pair], [a[1] for a in pair]) for pair in (samples[:2], samples[2:])]


class BrightBoxDetector(nn.Module):
    """Finds, in each channel k, the box around the pixels above 0.5 and calls it class k+1.

    ``shift`` moves every box right by its own width: the same boxes, each beside its object.
    """

    def __init__(self, shift: bool = False):
        super().__init__()
        self.shift = shift

    def forward(self, images):
        out = []
        for x in images:
            boxes, labels = [], []
            for k, channel in enumerate(x):
                ys, xs = torch.nonzero(channel > 0.5, as_tuple=True)
                if ys.numel():
                    box = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float()
                    if self.shift:
                        box = box + (box[2] - box[0]) * torch.tensor([1.0, 0.0, 1.0, 0.0])
                    boxes.append(box)
                    labels.append(k + 1)
            out.append({
                "boxes": torch.stack(boxes) if boxes else torch.zeros(0, 4),
                "scores": torch.ones(len(boxes)),
                "labels": torch.tensor(labels, dtype=torch.int64),
            })
        return out


@pytest.fixture
def map_backend():
    pytest.importorskip("torchmetrics")
    try:
        import faster_coco_eval  # noqa: F401
    except ImportError:
        pytest.importorskip("pycocotools")


def test_map_is_one_for_the_right_boxes_and_zero_for_boxes_beside_them(map_backend):
    right = detection_map(BrightBoxDetector(), synthetic_batches)  # a data callable, as a user gives
    assert right["map"] == pytest.approx(1.0) and right["map_50"] == pytest.approx(1.0)
    wrong = detection_map(BrightBoxDetector(shift=True), synthetic_batches())
    assert wrong["map"] == pytest.approx(0.0) and wrong["map_50"] == pytest.approx(0.0)


def test_map_of_a_compressed_detector_is_measured_and_its_mode_restored(map_backend, compressed):
    model, _ = compressed
    model.train()
    result = detection_map(model, synthetic_batches()[:1])
    assert model.training
    assert 0.0 <= result["map"] <= 1.0 and "mar_100" in result


def test_map_refuses_empty_or_malformed_data(map_backend):
    with pytest.raises(SpecError, match="no images"):
        detection_map(BrightBoxDetector(), [])
    with pytest.raises(SpecError, match="batch 0"):
        detection_map(BrightBoxDetector(), [torch.zeros(3, 8, 8)])
    with pytest.raises(PruneError):
        detection_map(BrightBoxDetector(), 42)
