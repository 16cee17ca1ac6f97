"""The HTML report opens from disk in headless Chromium with every image loaded."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pytest_prune.report import write_report
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# CI installs Chromium (.ci/run): there a missing browser is a failure, not a skip.
pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium is not installed (apt-get install chromium)",
)

# Counts images that finished loading with real pixels, once the page's load event has fired.
_IMAGE_CHECK = (
    '<script>window.addEventListener("load", function () {'
    " var images = document.images, loaded = 0;"
    " for (var i = 0; i < images.length; i++) {"
    "  if (images[i].complete && images[i].naturalWidth > 0) loaded++; }"
    ' var d = document.createElement("div"); d.id = "image-check";'
    ' d.textContent = "loaded=" + loaded + " total=" + images.length;'
    " document.body.appendChild(d); });</script>"
)


def _render(page: Path) -> str:
    assert CHROMIUM is not None, "CI must install chromium (see .ci/run)"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={page.parent / 'chromium-profile'}", "--virtual-time-budget=10000",
        "--dump-dom", page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120).stdout


def test_report_renders_with_every_image_loaded(tmp_path):
    run = PruneRun(RunSettings("lenet5-colour"))  # a colour input: the colour-share figure too
    run.method("l1", 0.5)
    run.method("random", 0.5)
    written = write_report(run, tmp_path / "report")
    page = tmp_path / "report" / "index.html"
    assert page in written
    html = page.read_text()
    sources = re.findall(r'<img[^>]+src="([^"]+)"', html)
    assert len(sources) >= 4  # top-1 vs MACs, attribution maps, filters removed, colour share
    assert all(not s.startswith(("http:", "https:", "/")) for s in sources)  # opens from disk
    probe = page.with_name("probe.html")
    probe.write_text(html.replace("</body>", _IMAGE_CHECK + "</body>"))
    dom = _render(probe)
    match = re.search(r"loaded=(\d+) total=(\d+)", dom)
    assert match, f"the page did not finish loading in Chromium: {dom[:300]!r}"
    assert match.group(1) == match.group(2) == str(len(sources))
