"""The README's "Your own model and data" section works as written: its module and its
pyproject.toml, copied into a fresh project, write the baselines it says and then pass them."""

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(language: str) -> list[str]:
    section = README.read_text().split("## Your own model and data", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.S)


def test_the_readme_model_data_and_ini_write_baselines_then_pass(pytester, monkeypatch):
    (module,), (ini,) = _blocks("python"), _blocks("toml")
    assert module.startswith("# mypkg/net.py\n")
    (pytester.path / "mypkg").mkdir()
    (pytester.path / "mypkg" / "__init__.py").write_text("")
    (pytester.path / "mypkg" / "net.py").write_text(module)
    pytester.makepyprojecttoml(ini)
    monkeypatch.syspath_prepend(str(pytester.path))
    try:
        # only the cheap checks: the ini example is under test, not the measurements
        quick = ["-p", "no:randomly", "-k", "top1 or macs_reduction"]
        written = pytester.runpytest(*quick, "--prune-update-baselines")
        written.assert_outcomes(passed=2)
        assert sorted(p.name for p in (pytester.path / "baselines" / "mypkg.net.build").glob("*.json")) == [
            "l1-macs0.5.json"]
        pytester.runpytest(*quick).assert_outcomes(passed=2)
    finally:
        for name in ("mypkg", "mypkg.net"):
            sys.modules.pop(name, None)
