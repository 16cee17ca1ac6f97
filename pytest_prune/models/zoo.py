"""The model registry: spec string → architecture, its input shape and its default data."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..errors import SpecError
from ..imports import import_callable
from .cifar_resnet import CIFAR_RESNET_DEPTHS, cifar_resnet
from .embedded import EMBEDDED, embedded_weights
from .lenet5 import LeNet5


@dataclass
class ModelInfo:
    """A built model with what the rest of the pipeline needs to know about it."""

    name: str  # used in gate ids and as the baseline folder name
    spec: str
    model: nn.Module
    input_shape: tuple[int, int, int] | None  # C, H, W of one sample; None: taken from the data
    num_classes: int | None  # None: taken from the data
    default_data: str | None  # data spec used when --prune-data is not given
    weights: str | None = None
    # the model pools adaptively and takes any image size: with --prune-data, H×W come from the
    # data (torchvision's CNNs; their default data is at input_shape)
    any_size: bool = False

    def example_input(self, batch: int = 2) -> torch.Tensor:
        if self.input_shape is None:
            raise SpecError(f"model {self.spec!r} gives no input shape; it comes from its data")
        return torch.randn((batch,) + tuple(self.input_shape), generator=torch.Generator().manual_seed(0))


def _embedded(name: str, model: nn.Module, input_shape: tuple[int, int, int], data: str) -> ModelInfo:
    """An embedded default, with its shipped trained weights (``--prune-weights`` may replace them)."""
    model.load_state_dict(embedded_weights(name))
    return ModelInfo(name, name, model, input_shape, 10, data, weights=f"embedded:{EMBEDDED[name]}")


# The input each built-in model takes, known before it is built (--collect-only builds nothing).
_ZOO_SHAPES: dict[str, tuple[int, int, int]] = {"lenet5": (1, 32, 32), "lenet5-colour": (3, 32, 32)}
_ZOO_SHAPES.update({f"cifar-resnet{d}": (3, 32, 32) for d in CIFAR_RESNET_DEPTHS})


def _lenet5() -> ModelInfo:
    return _embedded("lenet5", LeNet5(), _ZOO_SHAPES["lenet5"], "digits")


def _lenet5_colour() -> ModelInfo:
    return _embedded("lenet5-colour", LeNet5(in_channels=3), _ZOO_SHAPES["lenet5-colour"], "colour-digits")


def _cifar(depth: int) -> Callable[[], ModelInfo]:
    def build() -> ModelInfo:
        name = f"cifar-resnet{depth}"
        # The CIFAR data lives outside the project; PRUNE_CIFAR10_DIR points at it.
        return ModelInfo(name, name, cifar_resnet(depth), _ZOO_SHAPES[name], 10, "cifar10")

    return build


_ZOO: dict[str, Callable[[], ModelInfo]] = {"lenet5": _lenet5, "lenet5-colour": _lenet5_colour}
_ZOO.update({f"cifar-resnet{d}": _cifar(d) for d in CIFAR_RESNET_DEPTHS})


def known_models() -> list[str]:
    return sorted(_ZOO) + ["torchvision:NAME", "package.module:callable"]


def _torchvision(name: str, spec: str, num_classes: int = 1000) -> ModelInfo:
    import torchvision

    try:
        builder = torchvision.models.get_model_builder(name)
    except ValueError:
        available = ", ".join(torchvision.models.list_models(module=torchvision.models)[:12])
        raise SpecError(
            f"--prune-model {spec!r}: torchvision has no classification model {name!r}; "
            f"try one of {available}, …"
        ) from None
    torch.manual_seed(0)  # random weights, but the same ones every run
    model = builder(weights=None, num_classes=num_classes)
    size = 299 if name.startswith("inception") else 224
    return ModelInfo(model_name(spec), spec, model, (3, size, size), num_classes,
                     f"synthetic:3x{size}x{size}:{num_classes}", any_size=True)


def _head(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The classifier: the last ``nn.Linear`` in module order (``fc``, ``classifier.1``, ``heads.head``)."""
    linears = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else None


def torchvision_for_weights(info: ModelInfo, state: dict[str, torch.Tensor]) -> ModelInfo:
    """A ``torchvision:NAME`` model rebuilt with as many classes as ``state``'s classifier has (a
    resnet18 trained on CIFAR-10 has a 10-way ``fc``), so that its weights load; any other model,
    or weights whose classifier already fits, as it is."""
    head = _head(info.model) if info.spec.startswith("torchvision:") else None
    weight = state.get(f"{head[0]}.weight") if head else None
    if head is None or weight is None or weight.dim() != 2 or weight.shape[0] == head[1].out_features:
        return info
    return _torchvision(info.spec.split(":", 1)[1], info.spec, num_classes=int(weight.shape[0]))


def spec_name(spec: str) -> str:
    """The gate-id and baseline-folder name of a user spec: ``mypkg.net:build`` → ``mypkg.net.build``
    (the whole spec, so that two packages' ``build`` factories do not share a folder)."""
    module, _, attr = spec.partition(":")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", f"{module}.{attr}" if attr else module)


def model_name(spec: str) -> str:
    """The name of a model's gates and baseline folder, from its spec alone (nothing is built):
    ``lenet5``, ``torchvision-resnet18``, ``mypkg.net.build``."""
    spec = spec.strip()
    if spec in _ZOO:
        return spec
    if spec.startswith("torchvision:"):
        return "torchvision-" + re.sub(r"[^A-Za-z0-9_.-]", "_", spec.split(":", 1)[1])
    return spec_name(spec)


def declared_channels(spec: str) -> int | None:
    """The input's channel count where the spec alone says it (built-in and torchvision models),
    else None: a factory's model says it only once built, or its data does."""
    spec = spec.strip()
    if spec in _ZOO_SHAPES:
        return _ZOO_SHAPES[spec][0]
    return 3 if spec.startswith("torchvision:") else None


def _user_factory(spec: str) -> ModelInfo:
    factory = import_callable(spec, "--prune-model", "an nn.Module (or a pytest_prune.models.ModelInfo)")
    built = factory()
    if isinstance(built, ModelInfo):
        # gates are named from the spec (or --prune-name), so that listing them builds nothing
        return dataclasses.replace(built, name=spec_name(spec))
    if not isinstance(built, nn.Module):
        raise SpecError(
            f"--prune-model {spec!r}: the factory returned {type(built).__name__}, not an "
            "nn.Module (or a pytest_prune.models.ModelInfo)"
        )
    # A bare nn.Module says nothing of its input: shape and class count then come from the data.
    shape = getattr(built, "input_shape", None)
    classes = getattr(built, "num_classes", None)
    return ModelInfo(
        spec_name(spec), spec, built,
        tuple(int(v) for v in shape) if shape is not None else None,
        int(classes) if classes is not None else None,
        getattr(built, "default_data", None),
    )


def build_model(spec: str) -> ModelInfo:
    spec = spec.strip()
    if spec in _ZOO:
        torch.manual_seed(0)
        return _ZOO[spec]()
    if spec.startswith("torchvision:"):
        return _torchvision(spec.split(":", 1)[1], spec)
    if ":" in spec:
        return _user_factory(spec)
    raise SpecError(
        f"--prune-model {spec!r} is not a known model; use one of {', '.join(known_models())}"
    )
