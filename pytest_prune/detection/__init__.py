"""Gong et al. (2020) on object detectors: compress a torchvision detector (:mod:`.compress`:
statistics pruning of its traceable parts, then Tucker-2) and measure it (:mod:`.evaluation`: MACs
per image, output structure, mean average precision)."""

from .compress import PRUNE_SCOPES, DetectorCompression, PartPruning, PruneScope, compress_detector
from .evaluation import detection_map, detector_macs, output_structure

__all__ = [
    "PRUNE_SCOPES", "DetectorCompression", "PartPruning", "PruneScope", "compress_detector",
    "detection_map", "detector_macs", "output_structure",
]
