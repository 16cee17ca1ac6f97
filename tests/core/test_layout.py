"""The package layout keeps its promises: gating needs no torch, only the plugin knows pytest."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_prune"


def test_gating_reads_and_judges_baselines_without_torch():
    code = ("import sys, pytest_prune.gating as g; "
            "assert g.compare('top1', 0.5, g.CheckBaseline(0.5, 0.01)).passed; "
            "print(sorted(m for m in ('torch', 'pandas', 'torch_pruning') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_plugin_package_imports_pytest():
    outside = sorted(
        str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
        if "pytest" in _imports(p) and p.relative_to(PACKAGE).parts[0] != "plugin"
    )
    assert outside == []
