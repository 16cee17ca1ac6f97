"""``package.module:callable``: data that a user's own function returns.

The callable takes no arguments and returns one of

* a :class:`DataBundle` (used as it is, after a check of its first samples);
* a ``DataLoader`` yielding ``(x, y)`` batches, or an ``(x, y)`` tensor pair: one source used as
  train, calibration *and* evaluation data, so data-driven criteria and fine-tuning see the images
  accuracy is measured on; fine for a smoke test, return a dict to keep them apart;
* a dict ``{"train": …, "eval": …}`` of loaders or pairs, optionally with ``"calibration": …``
  (otherwise calibration is a fixed subset of train).

``x`` is a float tensor N×C×H×W, already normalised the way the model expects; ``y`` holds N
integer class indices. A loader is read once, into memory: for data too big for that, return a
``DataBundle`` of map-style datasets, which are read lazily.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..imports import import_callable
from ..errors import DataError
from .bundle import DataBundle
from .samples import TensorSamples, calibration_subset

DEFAULT_CALIBRATION_SIZE = 256
_FORMS = (
    "a pytest_prune.data.DataBundle, a torch DataLoader of (x, y) batches, an (x, y) tensor pair, "
    "or a dict {'train': ..., 'eval': ...} (optionally 'calibration': ...) of loaders or pairs"
)
_SPLIT_KEYS = ("train", "eval", "calibration")


def load_user_data(spec: str, *, calibration_size: int | None = None) -> DataBundle:
    returned = _import_callable(spec)()
    if isinstance(returned, DataBundle):
        return _checked_bundle(returned, spec, calibration_size)
    if isinstance(returned, dict):
        splits = _splits_of_dict(returned, spec)
    else:
        single = _as_samples(returned, spec, "the value it returned")
        splits = {"train": single, "eval": single}

    shapes = {key: tuple(samples.images.shape[1:]) for key, samples in splits.items()}
    if len(set(shapes.values())) > 1:
        found = ", ".join(f"{key} {'x'.join(map(str, shape))}" for key, shape in shapes.items())
        raise DataError(
            f"--prune-data {spec!r}: the splits hold images of different shapes ({found}); make them agree"
        )
    train = splits["train"]
    if "calibration" in splits:
        calibration = _first(splits["calibration"], calibration_size, spec)
    else:
        calibration = calibration_subset(train, calibration_size, DEFAULT_CALIBRATION_SIZE, spec)
    return DataBundle(
        name=spec,
        train=train,
        calibration=calibration,
        evaluation=splits["eval"],
        num_classes=1 + max(int(samples.labels.max()) for samples in splits.values()),
        input_shape=shapes["eval"],
    )


def _import_callable(spec: str) -> Callable[[], Any]:
    return import_callable(spec, "--prune-data", _FORMS)


def _splits_of_dict(returned: dict, spec: str) -> dict[str, TensorSamples]:
    unknown = sorted(map(str, set(returned) - set(_SPLIT_KEYS)))
    missing = [key for key in ("train", "eval") if key not in returned]
    if unknown or missing:
        raise DataError(
            f"--prune-data {spec!r} returned a dict with keys {sorted(map(str, returned))}; expected "
            f"'train' and 'eval' (and optionally 'calibration'), each a DataLoader or an (x, y) pair"
        )
    return {key: _as_samples(value, spec, f"its {key!r} entry") for key, value in returned.items()}


def _as_samples(value: Any, spec: str, part: str) -> TensorSamples:
    """A loader or an (x, y) pair, checked and gathered into one in-memory set of samples."""
    where = f"--prune-data {spec!r}: {part}"
    if isinstance(value, DataLoader):
        batches = [_checked_pair(batch, f"{where}, batch {number}") for number, batch in enumerate(value)]
        if not batches:
            raise DataError(f"{where} is a DataLoader that yields no batches; give it some data")
        images, labels = zip(*batches)
        shapes = {tuple(x.shape[1:]) for x in images}
        if len(shapes) > 1:
            raise DataError(f"{where} yields images of several shapes {sorted(shapes)}; make them agree")
        return TensorSamples(torch.cat(images), torch.cat(labels))
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], torch.Tensor):
        return TensorSamples(*_checked_pair(value, where))
    raise DataError(f"{where} is {_describe(value)}; expected {_FORMS}")


def _checked_pair(pair: Any, where: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
        raise DataError(f"{where} is {_describe(pair)}; expected an (x, y) pair of tensors")
    images, labels = pair
    if not isinstance(images, torch.Tensor) or not images.is_floating_point():
        raise DataError(
            f"{where}: x is {_describe(images)}; expected a float tensor N×C×H×W, normalised the way "
            "the model expects (for uint8 images: x.float() / 255, then normalise)"
        )
    if images.dim() != 4 or len(images) == 0:
        raise DataError(
            f"{where}: x has shape {tuple(images.shape)}; expected N×C×H×W with N ≥ 1 (for grey "
            "images without a channel axis use x.unsqueeze(1); for one image, x.unsqueeze(0))"
        )
    integer = isinstance(labels, torch.Tensor) and not (
        labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool
    )
    if not integer:
        raise DataError(
            f"{where}: y is {_describe(labels)}; expected integer class indices (torch.long); "
            "convert with y.long(), or y.argmax(1) for one-hot labels"
        )
    if labels.shape != (len(images),):
        raise DataError(
            f"{where}: y has shape {tuple(labels.shape)} for {len(images)} images; expected one class "
            f"index per image, shape ({len(images)},)"
        )
    if int(labels.min()) < 0:
        raise DataError(f"{where}: y holds negative labels (down to {int(labels.min())}); classes count from 0")
    return images.float(), labels.long()


def _checked_bundle(bundle: DataBundle, spec: str, calibration_size: int | None) -> DataBundle:
    """A user's bundle, after checking the first sample of each split against its input_shape."""
    expected = tuple(bundle.input_shape)
    for split in ("train", "calibration", "evaluation"):
        dataset = getattr(bundle, split)
        where = f"--prune-data {spec!r}: the DataBundle's {split} split"
        if len(dataset) == 0:
            raise DataError(f"{where} is empty; give it at least one sample")
        sample = dataset[0]
        if not (isinstance(sample, (tuple, list)) and len(sample) == 2):
            raise DataError(f"{where} yields {_describe(sample)}; expected (image, label) pairs")
        image, label = sample
        fits = isinstance(image, torch.Tensor) and image.is_floating_point() and tuple(image.shape) == expected
        if not fits:
            raise DataError(
                f"{where} yields images that are {_describe(image)}; expected float tensors of the "
                f"bundle's input_shape {expected} (C, H, W: one sample, no batch axis)"
            )
        if isinstance(label, torch.Tensor):
            label = label.item() if label.numel() == 1 and not label.is_floating_point() else None
        if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < bundle.num_classes:
            raise DataError(
                f"{where} yields label {sample[1]!r}; expected an int class index from 0 to "
                f"num_classes - 1 = {bundle.num_classes - 1}"
            )
    if calibration_size is None:
        return bundle
    return dataclasses.replace(bundle, calibration=_first(bundle.calibration, calibration_size, spec))


def _first(dataset: Dataset, count: int | None, spec: str) -> Dataset:
    """The first ``count`` samples of a calibration set the user chose (all of it by default)."""
    if count is None:
        return dataset
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(dataset):
        raise DataError(
            f"calibration_size={count!r} does not fit data {spec!r}: its calibration split has "
            f"{len(dataset)} samples; ask for from 1 to {len(dataset)}"
        )
    return Subset(dataset, range(count))


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"a {type(value).__name__}"
