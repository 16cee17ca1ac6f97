"""A split that streams a user's DataLoader: read batch by batch on every pass, never held in memory.

The user's loader stays theirs: its dataset, transforms, workers and batch size are used as they
are. :meth:`LoaderSplit.batches` re-cuts its batches to the size a consumer asks (evaluation,
calibration, fine-tuning, provenance digests: ``DataBundle.loader``), in the loader's order, with
only the batch in flight in memory; the same data given as an in-memory ``(x, y)`` pair therefore
gives the same batches, and the same figures. A ``LoaderSplit`` is also an ``IterableDataset`` of
single (image, label) samples, for code that batches a split with ``DataLoader(split, …)``.

Order: pytest-prune never reorders a stream. A loader that shuffles (``DataLoader(shuffle=True)``
with no generator of its own) draws its order from torch's global RNG when a pass starts; each pass
draws it from a fixed seed instead, so evaluation, ``--prune-eval-limit``, calibration and the
digests see one order on every pass and in every run, and fine-tuning (which asks for shuffled
data) gets a new, seeded order each epoch. A loader with its own ``generator`` keeps its own order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

from ..errors import DataError
from .batch_checks import checked_pair

# The seed a shuffling loader's order is drawn from on passes that ask for no shuffling.
STREAM_ORDER_SEED = 0
_END = object()


class LoaderSplit(IterableDataset):
    """The samples of a user's DataLoader, read anew on every pass.

    ``where`` names the loader in error messages; ``num_classes``, when known (from the model),
    is checked against every batch's labels. The first batch is read once on construction, to
    check it and learn the sample shape; nothing is kept but that shape.
    """

    def __init__(self, loader: DataLoader, where: str, *, num_classes: int | None = None):
        self.loader = loader
        self.where = where
        self.num_classes = num_classes
        self.limit: int | None = None  # read only the first ``limit`` samples
        self.order_seed = STREAM_ORDER_SEED
        self.reshuffle = False  # a new order (from order_seed + pass number) each pass
        self._passes = 0
        self.sample_shape: tuple[int, ...] | None = None
        next(self.checked_batches(), None)  # the first batch, checked: that sets sample_shape
        if self.sample_shape is None:
            raise DataError(f"{where} is a DataLoader that yields no batches; give it some data")

    # -- lazy views of the same stream ----------------------------------------------------------
    def first(self, count: int) -> LoaderSplit:
        """The first ``count`` samples (all of them, if the stream holds fewer), read lazily."""
        view = self._copy()
        view.limit = count if self.limit is None else min(count, self.limit)
        return view

    def shuffled(self, seed: int) -> LoaderSplit:
        """The stream with a new order each pass, if its loader shuffles: drawn from ``seed`` and the
        pass number, so two runs with one seed see the same orders. A loader that does not shuffle
        keeps its order."""
        view = self._copy()
        view.order_seed, view.reshuffle = seed, True
        return view

    def _copy(self) -> LoaderSplit:
        view = copy.copy(self)
        view._passes = 0
        return view

    # -- reading ------------------------------------------------------------------------------
    def batches(self, batch_size: int) -> RebatchedStream:
        """The stream in batches of ``batch_size`` (the last one shorter), re-cut from the loader's."""
        return RebatchedStream(self, batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        for images, labels in self.checked_batches():
            yield from zip(images, labels.tolist())

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Sample ``index``, read from the start of a pass: for a look at the first few samples."""
        for position, sample in enumerate(self):
            if position == index:
                return sample
        raise IndexError(f"{self.where} holds no sample {index}")

    def max_label(self) -> int:
        """The largest label of one pass over the stream (one pass, nothing kept)."""
        return max(int(labels.max()) for _, labels in self.checked_batches())

    @property
    def known_length(self) -> int | None:
        """How many samples one pass yields, where the loader's sampler or dataset says; else ``None``."""
        total = _samples_per_pass(self.loader)
        if total is None or self.limit is None:
            return total
        return min(total, self.limit)

    def __len__(self) -> int:
        length = self.known_length
        if length is None:
            raise DataError(
                f"{self.where}: the number of samples of this DataLoader is not known before reading it "
                "(an IterableDataset without __len__, batch_size=None or a batch_sampler of its own); "
                "give its dataset a __len__, or use a DataLoader with a batch_size over a map-style dataset"
            )
        return length

    def checked_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The loader's batches, each checked as it streams, cut after ``limit`` samples."""
        seen = 0
        for number, batch in enumerate(self._pass()):
            where = f"{self.where}, batch {number}"
            images, labels = checked_pair(batch, where)
            shape = tuple(images.shape[1:])
            if self.sample_shape is None:
                self.sample_shape = shape
            elif shape != self.sample_shape:
                raise DataError(
                    f"{where}: x has shape {tuple(images.shape)}, but the loader's first batch held "
                    f"images of shape {self.sample_shape} (C, H, W); every batch must hold images of "
                    "one shape: resize or crop them to one size in the loader's transform"
                )
            if self.num_classes is not None and int(labels.max()) >= self.num_classes:
                raise DataError(
                    f"{where}: y holds label {int(labels.max())}, but the model has {self.num_classes} "
                    f"classes (0 to {self.num_classes - 1}); give data of the model's classes"
                )
            if self.limit is not None and seen + len(images) >= self.limit:
                yield images[: self.limit - seen], labels[: self.limit - seen]
                return
            seen += len(images)
            yield images, labels

    def _pass(self) -> Iterator:
        """One pass over the user's loader, its own shuffling (if any) drawn from a fixed seed."""
        seed = self.order_seed + self._passes if self.reshuffle else self.order_seed
        self._passes += 1
        # A loader draws its shuffled order and its workers' seeds from torch's global RNG when its
        # iterator starts and yields the first batch; forking the RNG around exactly that pins
        # them to ``seed`` and leaves the caller's RNG as it was.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            iterator = iter(self.loader)
            first = next(iterator, _END)
        if first is _END:
            return
        yield first
        yield from iterator


class RebatchedStream:
    """A :class:`LoaderSplit`'s batches re-cut to ``batch_size``, on every pass; ``len`` counts batches.

    A loader batch that is already of the size asked is passed on as it is: copying large images
    costs more than generating or decoding them on some machines.
    """

    def __init__(self, split: LoaderSplit, batch_size: int):
        self.split = split
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        images: list[torch.Tensor] = []
        labels: list[torch.Tensor] = []
        held = 0
        for x, y in self.split.checked_batches():
            while len(x):
                take = min(self.batch_size - held, len(x))
                images.append(x[:take])
                labels.append(y[:take])
                x, y, held = x[take:], y[take:], held + take
                if held == self.batch_size:
                    batch = _joined(images, labels)
                    images, labels, held = [], [], 0  # let go of the pieces while the batch is used
                    yield batch
        if held:
            yield _joined(images, labels)


def _joined(images: list[torch.Tensor], labels: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    if len(images) == 1:
        return images[0], labels[0]
    return torch.cat(images), torch.cat(labels)


def _samples_per_pass(loader: DataLoader) -> int | None:
    """The samples one pass of ``loader`` yields, where that is known without reading it."""
    if loader.batch_size is None:
        return None  # the dataset yields whole batches of sizes of its own
    try:
        if isinstance(loader.dataset, IterableDataset):
            count = len(loader.dataset)
        elif type(loader.batch_sampler) is BatchSampler:
            count = len(loader.sampler)
        else:
            return None  # a batch sampler of the user's own may make batches of any size
    except (TypeError, NotImplementedError):
        return None
    return count - count % loader.batch_size if loader.drop_last else count
