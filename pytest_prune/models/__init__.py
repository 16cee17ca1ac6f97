"""Models from spec strings: the built-in zoo, torchvision by name, or a user factory.

Spec forms (``--prune-model``):

* ``lenet5``; ``cifar-resnet20`` / ``-32`` / ``-44`` / ``-56`` / ``-110``;
* ``torchvision:NAME`` — any torchvision classification model, built with random weights
  (``weights=None``): nothing is downloaded;
* ``package.module:callable`` — a user factory returning an ``nn.Module``.

Weights (``--prune-weights``) are loaded with ``torch.load(weights_only=True)``; a full pickle,
which can run arbitrary code, only with ``allow_pickle=True``.
"""

from __future__ import annotations

from .loading import load_weights
from .zoo import ModelInfo, build_model, known_models

__all__ = ["ModelInfo", "build_model", "known_models", "load_weights", "load_model"]


def load_model(spec: str, weights: str | None = None, allow_pickle: bool = False) -> ModelInfo:
    """Build the model named by ``spec`` and, if given, load ``weights`` into it (strictly)."""
    info = build_model(spec)
    if weights:
        load_weights(info.model, weights, allow_pickle=allow_pickle)
        info.weights = str(weights)
    return info
