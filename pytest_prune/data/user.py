"""``package.module:callable``: data that a user's own function returns.

The callable takes no arguments and returns one of

* a :class:`DataBundle` (used as it is, after a check of its first samples);
* a ``DataLoader`` yielding ``(x, y)`` batches, or an ``(x, y)`` tensor pair: one source used as
  train, calibration *and* evaluation data, so data-driven criteria and fine-tuning see the images
  accuracy is measured on; fine for a smoke test, return a dict to keep them apart;
* a dict ``{"train": …, "eval": …}`` of loaders or pairs, optionally with ``"calibration": …``
  (otherwise calibration is the first samples of train: a fixed subset of a pair, the first
  ``calibration_size`` samples of a loader).

``x`` is a float tensor N×C×H×W, already normalised the way the model expects; ``y`` holds N
integer class indices. A loader is streamed, never read into memory
(:class:`~pytest_prune.data.loader_split.LoaderSplit`): every pass (evaluation, calibration,
fine-tuning, the data digests) iterates it with its own transforms and workers, in its own order.
Its first batch is checked when the data is loaded; later batches are checked as they stream, and a
bad one fails with a DataError naming it. A pair is already in memory and is used as it is.

The class count is 1 + the largest label. Of a stream, it is the model's ``num_classes`` when the
model gives one (its labels are then checked against it as they stream); otherwise the data is read
once, at load, keeping only the largest label — give the model a ``num_classes`` attribute to skip
that pass over a large loader.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import DataError
from ..imports import import_callable
from .batch_checks import checked_pair, describe
from .bundle import DataBundle
from .loader_split import LoaderSplit
from .samples import TensorSamples, calibration_subset, first_samples

DEFAULT_CALIBRATION_SIZE = 256
_FORMS = (
    "a pytest_prune.data.DataBundle, a torch DataLoader of (x, y) batches, an (x, y) tensor pair, "
    "or a dict {'train': ..., 'eval': ...} (optionally 'calibration': ...) of loaders or pairs"
)
_SPLIT_KEYS = ("train", "eval", "calibration")
Split = TensorSamples | LoaderSplit  # a pair in memory, or a streamed loader


def load_user_data(
    spec: str, *, calibration_size: int | None = None, num_classes: int | None = None
) -> DataBundle:
    """The bundle of what ``spec``'s callable returns; ``num_classes``, the model's class count where
    it gives one, spares a streamed loader the pass that would count its classes."""
    returned = _import_callable(spec)()
    if isinstance(returned, DataBundle):
        return _checked_bundle(returned, spec, calibration_size)
    if isinstance(returned, dict):
        splits = _splits_of_dict(returned, spec, num_classes)
    else:
        single = _as_split(returned, spec, "the value it returned", num_classes)
        splits = {"train": single, "eval": single}

    shapes = {key: _sample_shape(split) for key, split in splits.items()}
    if len(set(shapes.values())) > 1:
        found = ", ".join(f"{key} {'x'.join(map(str, shape))}" for key, shape in shapes.items())
        raise DataError(
            f"--prune-data {spec!r}: the splits hold images of different shapes ({found}); make them agree"
        )
    train = splits["train"]
    if "calibration" in splits:
        calibration = _first(splits["calibration"], calibration_size, spec, "calibration")
    elif isinstance(train, LoaderSplit):  # a stream has no cheap random access: its first samples
        calibration = _first(train, calibration_size, spec, "train", default=DEFAULT_CALIBRATION_SIZE)
    else:
        calibration = calibration_subset(train, calibration_size, DEFAULT_CALIBRATION_SIZE, spec)
    return DataBundle(
        name=spec,
        train=train,
        calibration=calibration,
        evaluation=splits["eval"],
        num_classes=_class_count(splits.values(), num_classes),
        input_shape=shapes["eval"],
    )


def _import_callable(spec: str) -> Callable[[], Any]:
    return import_callable(spec, "--prune-data", _FORMS)


def _splits_of_dict(returned: dict, spec: str, num_classes: int | None) -> dict[str, Split]:
    unknown = sorted(map(str, set(returned) - set(_SPLIT_KEYS)))
    missing = [key for key in ("train", "eval") if key not in returned]
    if unknown or missing:
        raise DataError(
            f"--prune-data {spec!r} returned a dict with keys {sorted(map(str, returned))}; expected "
            f"'train' and 'eval' (and optionally 'calibration'), each a DataLoader or an (x, y) pair"
        )
    return {key: _as_split(value, spec, f"its {key!r} entry", num_classes) for key, value in returned.items()}


def _as_split(value: Any, spec: str, part: str, num_classes: int | None) -> Split:
    """A loader, streamed (its first batch checked now), or an (x, y) pair, checked, in memory."""
    where = f"--prune-data {spec!r}: {part}"
    if isinstance(value, DataLoader):
        return LoaderSplit(value, where, num_classes=num_classes)
    if isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[0], torch.Tensor):
        return TensorSamples(*checked_pair(value, where))
    raise DataError(f"{where} is {describe(value)}; expected {_FORMS}")


def _sample_shape(split: Split) -> tuple[int, ...]:
    return split.sample_shape if isinstance(split, LoaderSplit) else tuple(split.images.shape[1:])


def _class_count(splits: Iterable[Split], model_classes: int | None) -> int:
    """1 + the largest label: read from pairs; of a stream, the model's count when it gives one,
    else one pass over the stream (each loader once, even when it serves several splits)."""
    largest, read = [], set()
    for split in splits:
        if id(split) in read:
            continue
        read.add(id(split))
        if isinstance(split, TensorSamples):
            largest.append(int(split.labels.max()))
        else:
            largest.append(model_classes - 1 if model_classes is not None else split.max_label())
    return 1 + max(largest)


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
            raise DataError(f"{where} yields {describe(sample)}; expected (image, label) pairs")
        image, label = sample
        fits = isinstance(image, torch.Tensor) and image.is_floating_point() and tuple(image.shape) == expected
        if not fits:
            raise DataError(
                f"{where} yields images that are {describe(image)}; expected float tensors of the "
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
    calibration = _first(bundle.calibration, calibration_size, spec, "calibration")
    return dataclasses.replace(bundle, calibration=calibration)


def _first(
    dataset: Dataset, count: int | None, spec: str, split: str, default: int | None = None
) -> Dataset:
    """The first ``count`` samples of ``split`` (``None``: ``default`` of them, capped at the split;
    else all), ``count`` checked against the split's length where that is known."""
    if count is None:
        return dataset if default is None else first_samples(dataset, default)
    length = dataset.known_length if isinstance(dataset, LoaderSplit) else len(dataset)
    fits = not isinstance(count, bool) and isinstance(count, int) and count >= 1
    if not fits or (length is not None and count > length):
        available = f"has {length} samples; ask for from 1 to {length}" if length is not None else (
            "is a stream of unknown length; ask for a whole number from 1")
        raise DataError(f"calibration_size={count!r} does not fit data {spec!r}: its {split} split {available}")
    return first_samples(dataset, count)
