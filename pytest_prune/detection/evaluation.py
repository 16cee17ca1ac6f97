"""Measuring a detector: its MACs one image at a time, the structure of its outputs, and its mean
average precision on the user's data (torchmetrics, imported only there)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..errors import PruneError, SpecError
from ..measure.macs import LayerCount, ModelCount, count_model
from ..modes import eval_mode


def detector_macs(model: nn.Module, images: Sequence[torch.Tensor]) -> ModelCount:
    """Conv and linear MACs of ``model``'s forward on each image alone, summed over ``images``.

    Counted by :func:`~pytest_prune.measure.count_model` (forward hooks), one image at a time: what
    a one-image-at-a-time deployment costs. (A batched forward pads every image to the largest one
    and also computes on the padding.) The count includes the detector's internal resize: a 320×320
    image is computed at the size ``model.transform`` scales it to. The RoI head's MACs scale with
    the number of proposals the RPN keeps (``rpn.post_nms_top_n``), which the weights can change.
    Per-layer MACs are summed by name; ``params`` is the model's parameter count.
    """
    if not images:
        raise SpecError("detector_macs needs at least one image (a C×H×W tensor)")
    per_layer: dict[str, LayerCount] = {}
    total = 0
    params = 0
    for image in images:
        if image.dim() != 3:
            raise SpecError(f"detector_macs: an image has shape {tuple(image.shape)}; give C×H×W tensors")
        count = count_model(model, image.unsqueeze(0))
        total += count.macs
        params = count.params
        for layer in count.layers:
            seen = per_layer.get(layer.name)
            per_layer[layer.name] = layer if seen is None else LayerCount(
                layer.name, layer.kind, seen.macs + layer.macs, layer.params
            )
    return ModelCount(total, params, list(per_layer.values()))


def output_structure(outputs: Sequence[dict[str, torch.Tensor]]) -> list[dict[str, tuple]]:
    """Per image, each output's key → (dtype, dimensions after the first): what a detector's
    caller relies on, without the number of detections (which the weights decide).

    Two detectors return the same structure on an image when these are equal, e.g.
    ``{'boxes': (torch.float32, (4,)), 'labels': (torch.int64, ()), 'scores': (torch.float32, ())}``.
    """
    return [{key: (value.dtype, tuple(value.shape[1:])) for key, value in sorted(out.items())} for out in outputs]


DetectionBatch = tuple[Sequence[torch.Tensor], Sequence[dict[str, torch.Tensor]]]


def _map_metric():
    try:
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError:
        raise PruneError(
            "detection_map needs torchmetrics and a COCO evaluation backend: "
            "pip install torchmetrics faster-coco-eval (or pycocotools)"
        ) from None
    for backend, module in (("faster_coco_eval", "faster_coco_eval"), ("pycocotools", "pycocotools")):
        try:
            __import__(module)
        except ImportError:
            continue
        return MeanAveragePrecision(iou_type="bbox", backend=backend)
    raise PruneError(
        "torchmetrics' MeanAveragePrecision needs a COCO evaluation backend: "
        "pip install faster-coco-eval (or pycocotools)"
    )


def _batches(data: Any) -> Iterable[DetectionBatch]:
    if callable(data) and not isinstance(data, Iterable):
        data = data()
    if not isinstance(data, Iterable):
        raise SpecError(
            f"detection data is {type(data).__name__}; give an iterable of (images, targets) batches "
            "(or a callable returning one), e.g. a DataLoader with collate_fn=lambda b: tuple(zip(*b))"
        )
    return data


@torch.no_grad()
def detection_map(model: nn.Module, data: Any) -> dict[str, float]:
    """COCO-style box mAP of ``model`` on ``data``, by ``torchmetrics.detection.MeanAveragePrecision``.

    ``data``: an iterable of ``(images, targets)`` batches, or a callable taking no arguments that
    returns one — ``images`` a sequence of C×H×W float tensors, ``targets`` one dict per image with
    ``boxes`` (K×4, x1 y1 x2 y2 in pixels of that image) and ``labels`` (K integer classes), the
    format torchvision's detection references and datasets use. The model runs in eval mode (its
    mode is restored) and must return, per image, a dict with ``boxes``, ``scores`` and ``labels``.
    Returns the metric's scalar entries as floats: ``map`` (IoU 0.50:0.95), ``map_50``, ``map_75``,
    ``mar_100``, … (−1 where a size class has no ground truth).

    Gating mAP on your own data, in a test of yours (the plugin's ``--prune-data`` is for
    classifiers: it expects integer labels, not boxes)::

        def val_batches():  # yields (images, targets) with targets [{"boxes": ..., "labels": ...}]
            ...

        def test_compressed_detector_keeps_its_map():
            dense = my_trained_detector()
            compressed, report = compress_detector(dense, ranks="vbmf")
            # fine-tune ``compressed`` on detection data here, as Gong et al. do
            before, after = detection_map(dense, val_batches), detection_map(compressed, val_batches)
            assert after["map"] >= before["map"] - 0.01, report.summary()
    """
    metric = _map_metric()
    seen = 0
    with eval_mode(model):
        for number, batch in enumerate(_batches(data)):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise SpecError(f"detection data, batch {number}: expected an (images, targets) pair")
            images, targets = batch
            predictions = model(list(images))
            metric.update(
                [{k: p[k].detach().cpu() for k in ("boxes", "scores", "labels")} for p in predictions],
                [{k: t[k].detach().cpu() for k in ("boxes", "labels")} for t in targets],
            )
            seen += len(images)
    if not seen:
        raise SpecError("detection data yielded no images; give at least one (images, targets) batch")
    return {k: float(v) for k, v in metric.compute().items() if isinstance(v, torch.Tensor) and v.numel() == 1 and k != "classes"}
