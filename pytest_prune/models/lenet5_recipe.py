"""The recipe that made the embedded LeNet-5 weights, and the command that remakes them.

The weights ship inside the package (:mod:`pytest_prune.models.embedded`): nothing is trained at
first use, so every machine gates the same dense model. Training is bitwise repeatable on one
machine (fixed seeds, one CPU thread, deterministic kernels) but not across CPUs: another
processor's kernels round differently and the model converges to other weights (held-out top-1
moved by about half a point between two CPUs; see the README). That is why the weights ship, and why remaking them is a release step,
not a test step.

Regenerate the shipped files (then regenerate the committed baselines)::

    python -m pytest_prune.models.lenet5_recipe --write
"""

from __future__ import annotations

import argparse
import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data.colour_digits import colour_digits
from ..data.digits import SPLIT_RECIPE, load_digits_bundle
from ..modes import torch_threads
from .lenet5 import LeNet5

# Everything that decides the trained weights; the shipped manifest records its digest.
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
}


# The colour variant (3-channel LeNet-5 on colour-digits, where colour carries no label
# information) for the colour-selectivity checks. Same schedule.
COLOUR_RECIPE: dict = {**RECIPE, "architecture": "lenet5-colour", "data": "colour-digits", "in_channels": 3}
RECIPES: dict[str, dict] = {"lenet5": RECIPE, "lenet5-colour": COLOUR_RECIPE}


@contextmanager
def _repeatable_cpu() -> Iterator[None]:
    """One thread and deterministic kernels while inside, the caller's settings restored after.

    Thread count changes how CPU reductions are split, and so the last bits of the weights.
    """
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with torch_threads(1), torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def _shifted(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image moved by a random whole number of pixels (up to ``max_shift``) in x and y."""
    height, width = images.shape[-2:]
    # Every digit has blank corners, so the batch minimum is the normalised value of empty paper.
    padded = F.pad(images, (max_shift,) * 4, value=float(images.amin()))
    offsets = torch.randint(0, 2 * max_shift + 1, (len(images), 2), generator=generator).tolist()
    return torch.stack([p[:, dy : dy + height, dx : dx + width] for p, (dy, dx) in zip(padded, offsets)])


def train_lenet5(recipe: dict) -> dict[str, torch.Tensor]:
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


def top1(model: nn.Module, data: Dataset | DataLoader) -> float:
    """Fraction of samples whose highest logit is the label (the model is left in eval mode)."""
    loader = data if isinstance(data, DataLoader) else DataLoader(data, batch_size=512)
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for images, labels in loader:
            correct += int((model(images).argmax(dim=1) == labels).sum())
            total += len(labels)
    return correct / total


def write_embedded(folder: Path) -> dict:
    """Train both embedded models by their recipes and write them, with their manifest, to ``folder``."""
    from .embedded import EMBEDDED, MANIFEST

    folder.mkdir(parents=True, exist_ok=True)
    manifest = {}
    for name, file_name in EMBEDDED.items():
        recipe = RECIPES[name]
        state = train_lenet5(recipe)
        path = folder / file_name
        torch.save(state, path)
        model = LeNet5(in_channels=recipe.get("in_channels", 1))
        model.load_state_dict(state)
        bundle = load_digits_bundle() if recipe["data"] == "digits" else colour_digits()
        manifest[name] = {
            "file": file_name,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "held_out_top1": top1(model, bundle.evaluation),
            "recipe": recipe,
            "torch": torch.__version__,
        }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="overwrite the shipped weights and manifest")
    parser.add_argument("--out", type=Path, default=None, help="folder to write to (default: the package's)")
    args = parser.parse_args(argv)
    from .embedded import WEIGHTS_DIR

    folder = args.out or WEIGHTS_DIR
    if not args.write and args.out is None:
        parser.error("pass --write to overwrite the shipped weights, or --out DIR to write elsewhere")
    for name, entry in write_embedded(folder).items():
        print(f"{name}: {folder / entry['file']}  held-out top-1 {entry['held_out_top1']:.2%}  sha256 {entry['sha256'][:12]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
