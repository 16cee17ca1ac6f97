"""The report of a run with one failing gate, opened from disk in headless Chromium: every image
loads, the verdict table is there, and the failure is its first row and red in the first screen."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema  # the test extra installs it
import pytest

from pytest_prune.report.html import FAILED_BACKGROUND

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium is not installed (apt-get install chromium)",
)
SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "results.schema.json"
# a colour input, so that the colour-share figure is drawn too (every figure the page has)
GATES = ["--prune-model=lenet5-colour", "--prune-criteria=l1", "--prune-ratios=0.5", "-p", "no:randomly"]
SCREEN = (1280, 900)

# Once the page's load event has fired: how many images loaded with real pixels, and the verdict
# table's rows in page order (outcome, method, check).
_PROBE = (
    '<script>window.addEventListener("load", function () {'
    " var images = document.images, loaded = 0;"
    " for (var i = 0; i < images.length; i++) {"
    "  if (images[i].complete && images[i].naturalWidth > 0) loaded++; }"
    " var rows = document.querySelectorAll('table.verdicts tbody tr'), order = [];"
    " for (var j = 0; j < rows.length; j++) {"
    "  var cells = rows[j].cells;"
    "  order.push(rows[j].dataset.outcome + ':' + cells[0].textContent + '::' + cells[1].textContent); }"
    ' var d = document.createElement("div"); d.id = "probe";'
    ' d.textContent = "loaded=" + loaded + " total=" + images.length + " rows=" + order.join(",");'
    " document.body.appendChild(d); });</script>"
)


def _chromium(page: Path, *output: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "CI must install chromium (see .ci/run)"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--hide-scrollbars", f"--window-size={SCREEN[0]},{SCREEN[1]}",
        f"--user-data-dir={page.parent / 'chromium-profile'}", "--virtual-time-budget=10000",
        *output, page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def _probe(page: Path) -> tuple[int, int, list[str]]:
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", _PROBE + "</body>"))
    dom = _chromium(probe, "--dump-dom").stdout
    match = re.search(r"loaded=(\d+) total=(\d+) rows=([^<]*)", dom)
    assert match, f"the page did not finish loading in Chromium: {dom[:300]!r}"
    return int(match.group(1)), int(match.group(2)), match.group(3).split(",")


def _red_share_of_first_screen(page: Path) -> float:
    """The share of the first screen's pixels painted in the failed-gate colour."""
    import numpy as np
    from PIL import Image

    shot = page.with_name(f"{page.stem}.png")
    _chromium(page, f"--screenshot={shot}")
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (SCREEN[1], SCREEN[0])
    red = [int(FAILED_BACKGROUND[i:i + 2], 16) for i in (1, 3, 5)]
    return float((pixels == red).all(axis=-1).mean())


def test_a_failed_gate_is_the_first_row_and_red_in_the_first_screen(pytester):
    schema = json.loads(SCHEMA.read_text())
    baselines = pytester.path / "bl"
    args = [*GATES, f"--prune-baselines={baselines}"]
    pytester.runpytest(*args, "--prune-update-baselines", f"--prune-report={pytester.path / 'written'}")
    # the planted regression: the baseline says l1-0.5 had 20 points more top-1 than it measures
    path = baselines / "lenet5-colour" / "l1-0.5.json"
    stored = json.loads(path.read_text())
    stored["checks"]["top1"]["value"] += 0.2
    path.write_text(json.dumps(stored))
    report = pytester.path / "failed"
    result = pytester.runpytest(*args, f"--prune-report={report}")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["FAILED lenet5-colour::l1-0.5::top1*"])

    document = json.loads((report / "results.json").read_text())
    jsonschema.validate(document, schema)
    assert document["status"] == "failed" and document["counts"]["failed"] == 1
    first = document["verdicts"][0]
    assert (first["method"], first["check"], first["outcome"]) == ("l1-0.5", "top1", "failed")
    assert first["baseline"] == pytest.approx(first["measured"] + 0.2)
    assert "nothing recorded" in first["changed"]  # same model, data and plan: only the file moved

    page = report / "index.html"
    loaded, total, rows = _probe(page)
    assert total >= 4 and loaded == total  # top-1 vs MACs, attribution maps, filters removed, colour share
    assert rows[0] == "failed:l1-0.5::top1"
    assert all(r.startswith("passed:") for r in rows[1:]) and len(rows) == document["counts"]["passed"] + 1
    assert _red_share_of_first_screen(page) > 0.01
    # the control: the baseline-writing run's page has no failure, and no red on its first screen
    assert _red_share_of_first_screen(pytester.path / "written" / "index.html") == 0
