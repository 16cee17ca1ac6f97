"""Data spec string (``--prune-data``) → :class:`DataBundle`, checked against the model's input shape."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import DataError, SpecError
from .bundle import DataBundle
from .cifar10 import load_cifar10_bundle
from .colour_digits import colour_digits
from .digits import load_digits_bundle
from .synthetic import synthetic_bundle
from .user import load_user_data

DATA_FORMS = (
    "digits",
    "colour-digits",
    "cifar10",
    "cifar10:DIR",
    "cifar10-jpeg",
    "cifar10-jpeg:DIR",
    "synthetic:CxHxW:K",
    "package.module:callable",
)
_USER_CALLABLE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


def load_data(
    spec: str,
    *,
    seed: int = 0,
    calibration_size: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
) -> DataBundle:
    """Resolve ``spec`` to a bundle of train, calibration and evaluation data.

    ``seed`` picks the draw of ``synthetic`` data only: real splits and calibration subsets are
    fixed, because stored baselines were measured on them. ``calibration_size`` overrides the
    source's default calibration size (256 digits, 2,048 CIFAR-10, 64 synthetic, 256 user).
    ``input_shape``, the model's (C, H, W), is checked against the data's samples; ``num_classes``,
    the model's class count where it gives one, is what a user's streamed loaders are checked
    against (without it, they are read once to count their classes).
    """
    bundle = _resolve(spec.strip(), seed, calibration_size, num_classes)
    if input_shape is not None and tuple(input_shape) != tuple(bundle.input_shape):
        raise DataError(
            f"--prune-data {spec!r} gives samples of shape {_shape(bundle.input_shape)} (C×H×W) but the "
            f"model expects {_shape(input_shape)}; choose data that fits the model (leave --prune-data "
            "out to use the model's default data) or a model that fits the data"
        )
    return bundle


def _resolve(spec: str, seed: int, calibration_size: int | None, num_classes: int | None) -> DataBundle:
    if spec == "digits":
        return load_digits_bundle(calibration_size)
    if spec == "colour-digits":
        return colour_digits(seed=0, calibration_size=calibration_size)
    source, has_argument, argument = spec.partition(":")
    if source in ("cifar10", "cifar10-jpeg"):
        if has_argument and not argument.strip():
            raise SpecError(f"data spec {spec!r} names no folder; write {source}:DIR, or {source} alone")
        directory = Path(argument) if has_argument else None
        return load_cifar10_bundle(
            directory, jpeg_evaluation=source == "cifar10-jpeg", calibration_size=calibration_size
        )
    if source == "synthetic":
        return synthetic_bundle(argument, seed=seed, calibration_size=calibration_size)
    if _USER_CALLABLE.fullmatch(spec):
        return load_user_data(spec, calibration_size=calibration_size, num_classes=num_classes)
    raise SpecError(f"data spec {spec!r} is not one we know; use one of: {', '.join(DATA_FORMS)}")


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(size) for size in shape)
