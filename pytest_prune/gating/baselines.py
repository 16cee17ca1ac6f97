"""The baseline store: small JSON files under ``baselines/<model>/``, one per compression method.

A file records the settings it was measured under (data, seed, recovery, allocation), its
provenance (the dense model, data and plan it was measured on: :mod:`pytest_prune.pipeline.provenance`)
and, per check, the measured value and its tolerance. It is written atomically (temporary file, then
``os.replace``) with sorted keys and one value per line, so a code review shows exactly which
number moved. The store knows nothing of torch: it reads and writes plain numbers.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import BaselineError

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)  # format 1 had no provenance
UPDATE_HINT = "--prune-update-baselines"
OBTAINED_SUFFIX = ".obtained.json"  # measured values written beside a failing baseline
# Settings that older files recorded and that are provenance now (shown when they change, not refused).
_PROVENANCE_KEYS = ("weights",)


@dataclass
class CheckBaseline:
    value: float
    tolerance: float


@dataclass
class Baseline:
    """What one (model, method) measured: its settings and one value per check."""

    model: str
    method: str  # e.g. "l1-0.5" or "l1-0.5+lsq"
    settings: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, CheckBaseline] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "model": self.model,
            "method": self.method,
            "settings": dict(self.settings),
            "provenance": dict(self.provenance),
            "checks": {
                k: {"value": c.value, "tolerance": c.tolerance} for k, c in sorted(self.checks.items())
            },
        }

    @classmethod
    def from_json(cls, data: Any, path: Path) -> "Baseline":
        try:
            if data.get("format") not in READABLE_FORMATS:
                raise BaselineError(
                    f"baseline {path} has format {data.get('format')!r}, expected one of "
                    f"{READABLE_FORMATS}; regenerate it with {UPDATE_HINT}"
                )
            checks = {
                name: CheckBaseline(float(c["value"]), float(c["tolerance"]))
                for name, c in data["checks"].items()
            }
            return cls(
                str(data["model"]), str(data["method"]), dict(data.get("settings", {})), checks,
                dict(data.get("provenance") or {}),
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise BaselineError(
                f"baseline {path} is malformed ({type(exc).__name__}: {exc}); fix it by hand or "
                f"regenerate it with {UPDATE_HINT}"
            ) from None


def _compact_int_lists(text: str) -> str:
    """Lists of integers (removed positions, per-layer counts) on one line each: a review diff
    then shows one changed line per group or layer, not one per channel."""
    return re.sub(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]", lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", name)


class BaselineStore:
    """Reads and writes baselines under a root directory (``--prune-baselines``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, model: str, method: str) -> Path:
        return self.root / _safe(model) / f"{_safe(method)}.json"

    def exists(self, model: str, method: str) -> bool:
        return self.path(model, method).is_file()

    def load(self, model: str, method: str) -> Baseline:
        path = self.path(model, method)
        if not path.is_file():
            raise BaselineError(
                f"no baseline for {model}::{method} at {path}; write it with "
                f"`pytest --prune-model=... {UPDATE_HINT}` (and commit the file)"
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BaselineError(
                f"baseline {path} cannot be read ({type(exc).__name__}: {exc}); restore it from "
                f"version control or regenerate it with {UPDATE_HINT}"
            ) from None
        return Baseline.from_json(data, path)

    def obtained_path(self, model: str, method: str) -> Path:
        return self.root / _safe(model) / f"{_safe(method)}{OBTAINED_SUFFIX}"

    def load_if_valid(self, model: str, method: str) -> Baseline | None:
        """The stored baseline, or ``None`` when there is none or it cannot be read."""
        try:
            return self.load(model, method) if self.exists(model, method) else None
        except BaselineError:
            return None

    def save(self, baseline: Baseline) -> Path:
        self.obtained_path(baseline.model, baseline.method).unlink(missing_ok=True)
        return self._write(self.path(baseline.model, baseline.method), baseline)

    def save_obtained(self, baseline: Baseline) -> Path:
        """Write what a failing run measured beside its baseline, for a reviewer to diff; the
        folder's ``.gitignore`` keeps these files out of commits."""
        ignore = self.root / ".gitignore"
        if not ignore.exists():
            ignore.parent.mkdir(parents=True, exist_ok=True)
            ignore.write_text(f"# measured values of failing gates (pytest-prune)\n*{OBTAINED_SUFFIX}\n")
        return self._write(self.obtained_path(baseline.model, baseline.method), baseline)

    def _write(self, path: Path, baseline: Baseline) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = _compact_int_lists(json.dumps(baseline.to_json(), indent=2, sort_keys=True)) + "\n"
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def methods(self, model: str) -> list[str]:
        folder = self.root / _safe(model)
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if not p.name.endswith(OBTAINED_SUFFIX))


def settings_mismatch(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Human-readable differences between the settings a baseline was measured under and now."""
    out = []
    for key in sorted((set(stored) | set(current)) - set(_PROVENANCE_KEYS)):
        if stored.get(key) != current.get(key):
            out.append(f"{key}: baseline {stored.get(key)!r}, this run {current.get(key)!r}")
    return out
