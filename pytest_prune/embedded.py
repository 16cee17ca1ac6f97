"""The embedded default: LeNet-5 trained on ``digits`` in seconds, so the plugin works out of the box.

No weights ship with the package and nothing is downloaded: the model is trained from a fixed recipe
the first time it is needed and cached under a file name carrying a hash of that recipe. Training
is bitwise repeatable on one machine (fixed seeds, one CPU thread, deterministic algorithms), so a
cache miss reproduces the same weights and the same baseline accuracy.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data.colour_digits import colour_digits
from .data.digits import SPLIT_RECIPE, load_digits_bundle
from .errors import WeightsError
from .models.lenet5 import LeNet5
from .models.loading import read_state_dict

# Everything that decides the trained weights. The cache key hashes it, so editing any value (or
# moving to another torch minor release, whose kernels may round differently) retrains.
RECIPE: dict = {
    "architecture": "lenet5",
    "data": "digits",
    "split": SPLIT_RECIPE,
    "epochs": 15,
    "batch_size": 32,
    "optimizer": "sgd-nesterov",
    "lr": 0.05,  # peak of a one-cycle schedule
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "max_shift_px": 2,  # random translation: the 1,438 training digits alone overfit
    "seed": 0,
    "torch": ".".join(torch.__version__.split(".")[:2]),
}


# The colour variant (3-channel LeNet-5 on colour-digits, where colour carries no label
# information) for the colour-selectivity checks. Same schedule; its own cache file.
COLOUR_RECIPE: dict = {**RECIPE, "architecture": "lenet5-colour", "data": "colour-digits", "in_channels": 3}
RECIPES: dict[str, dict] = {"lenet5": RECIPE, "lenet5-colour": COLOUR_RECIPE}


def recipe_hash(recipe: dict = RECIPE) -> str:
    """A short, stable digest of ``recipe`` (key order does not matter)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def cache_file(cache_dir: Path, recipe: dict = RECIPE) -> Path:
    return Path(cache_dir) / f"{recipe['architecture']}-{recipe['data']}-{recipe_hash(recipe)}.pt"


def trained_lenet5(cache_dir: Path | None, recipe: dict = RECIPE) -> dict[str, torch.Tensor]:
    """The embedded LeNet-5's state dict: read from ``cache_dir`` if a good copy is there, else trained.

    A cache file that is unreadable or does not fit LeNet-5 is retrained and overwritten. With
    ``cache_dir=None`` nothing is read or written. ``recipe`` is :data:`RECIPE` (grey digits) or
    :data:`COLOUR_RECIPE` (colour digits).
    """
    if cache_dir is None:
        return _train_lenet5(recipe)
    path = cache_file(cache_dir, recipe)
    if path.is_file():
        cached = _read_cached(path, recipe)
        if cached is not None:
            return cached
    state = _train_lenet5(recipe)
    try:
        _write_atomically(state, path)
    except OSError as exc:
        # A read-only cache must not stop the run; it only costs the next run a retraining.
        warnings.warn(f"could not cache the embedded LeNet-5 at {path} ({exc}); it will be retrained next time")
    return state


def _read_cached(path: Path, recipe: dict = RECIPE) -> dict[str, torch.Tensor] | None:
    """The cached state dict, or ``None`` when the file is corrupt or holds other weights."""
    try:
        state = read_state_dict(path)  # weights_only=True: a cache file is never trusted as a pickle
        LeNet5(in_channels=recipe.get("in_channels", 1)).load_state_dict(state, strict=True)
    except (WeightsError, RuntimeError):
        return None
    return state


def _write_atomically(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(state, stream)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def _repeatable_cpu() -> Iterator[None]:
    """One thread and deterministic kernels while inside, the caller's settings restored after.

    Thread count changes how CPU reductions are split, and so the last bits of the weights.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.set_num_threads(threads)


def _shifted(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by a random whole number of pixels (up to ``max_shift``) in x and y."""
    height, width = images.shape[-2:]
    # Every digit has blank corners, so the batch minimum is the normalised value of empty paper.
    padded = F.pad(images, (max_shift,) * 4, value=float(images.amin()))
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([p[:, dy : dy + height, dx : dx + width] for p, (dy, dx) in zip(padded, offsets)])


def _train_lenet5(recipe: dict) -> dict[str, torch.Tensor]:
    bundle = load_digits_bundle() if recipe["data"] == "digits" else colour_digits()
    with _repeatable_cpu():
        torch.manual_seed(recipe["seed"])  # the initial weights; fork_rng keeps the caller's RNG as it was
        model = LeNet5(num_classes=bundle.num_classes, in_channels=recipe.get("in_channels", 1))
        augment = torch.Generator().manual_seed(recipe["seed"] + 1)
        loader = bundle.loader("train", recipe["batch_size"], shuffle=True, seed=recipe["seed"])
        optimiser = torch.optim.SGD(
            model.parameters(),
            lr=recipe["lr"],
            momentum=recipe["momentum"],
            weight_decay=recipe["weight_decay"],
            nesterov=True,
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=recipe["lr"], total_steps=recipe["epochs"] * len(loader)
        )
        model.train()
        for _ in range(recipe["epochs"]):
            for images, labels in loader:
                optimiser.zero_grad()
                loss = F.cross_entropy(model(_shifted(images, recipe["max_shift_px"], augment)), labels)
                loss.backward()
                optimiser.step()
                schedule.step()
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def _top1(model: nn.Module, data: Dataset | DataLoader) -> float:
    """Fraction of samples whose highest logit is the label (the model is left in eval mode)."""
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=512)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images).argmax(dim=1) == labels).sum())
            total += len(labels)
    return correct / total
