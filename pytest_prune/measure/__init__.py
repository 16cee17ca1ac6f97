"""Measurements of a model: accuracy, MACs and parameters (and more as the checks grow)."""

from .accuracy import Accuracy, evaluate, evaluate_together
from .macs import LayerCount, ModelCount, count_model, serialised_bytes, storage_bytes

__all__ = ["Accuracy", "LayerCount", "ModelCount", "count_model", "evaluate", "evaluate_together", "serialised_bytes", "storage_bytes"]
