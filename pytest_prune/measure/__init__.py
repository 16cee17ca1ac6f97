"""Measurements of a model: accuracy, MACs and parameters (and more as the checks grow)."""

from .accuracy import Accuracy, evaluate
from .macs import LayerCount, ModelCount, count_model, storage_bytes

__all__ = ["Accuracy", "LayerCount", "ModelCount", "count_model", "evaluate", "storage_bytes"]
