"""Models from spec strings: the built-in zoo, torchvision by name, or a user factory.

Spec forms (``--prune-model``):

* ``lenet5``; ``cifar-resnet20`` / ``-32`` / ``-44`` / ``-56`` / ``-110``;
* ``torchvision:NAME`` — any torchvision classification model, built with random weights
  (``weights=None``): nothing is downloaded; with weights whose classifier (the last
  ``nn.Linear``) has other classes, it is built with that many (:func:`.zoo.torchvision_for_weights`);
* ``package.module:callable`` — a user factory returning an ``nn.Module``.

Weights (``--prune-weights``) are loaded with ``torch.load(weights_only=True)``; a full pickle,
which can run arbitrary code, only with ``allow_pickle=True``.
"""

from __future__ import annotations

from .loading import load_state, load_weights, read_state_dict
from .zoo import ModelInfo, build_model, known_models, torchvision_for_weights

__all__ = ["ModelInfo", "build_model", "known_models", "load_weights", "load_model"]


def load_model(spec: str, weights: str | None = None, allow_pickle: bool = False) -> ModelInfo:
    """Build the model named by ``spec`` and, if given, load ``weights`` into it (strictly)."""
    info = build_model(spec)
    if weights:
        state = read_state_dict(weights, allow_pickle)
        info = torchvision_for_weights(info, state)  # a torchvision model trained on other classes
        load_state(info.model, state, weights)
        info.weights = str(weights)
    return info
