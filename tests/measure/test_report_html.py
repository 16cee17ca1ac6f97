"""The HTML report: every image it refers to is on disk beside it, and missing inputs are said."""

import html
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd

from pytest_prune.report.html import write_html_report


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def image_sources(page: Path) -> list[str]:
    parser = Images()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.sources


def results(**extra) -> pd.DataFrame:
    rows = []
    for criterion in ("l1", "car"):
        for ratio, macs in ((0.25, 600), (0.5, 300)):
            rows.append(
                {"model": "lenet5", "criterion": criterion, "ratio": ratio, "top1_pruned": 0.9 - ratio / 5,
                 "macs_dense": 1000, "macs_pruned": macs, "colour_selective_pruned": 0.6, "colour_selective_kept": 0.2}
            )
    return pd.DataFrame(rows).assign(**extra)


def figures() -> dict:
    maps = np.random.default_rng(0).random((3, 8, 8))
    return {
        "attribution": {"dense": maps, "pruned": maps[::-1], "images": np.ones((3, 3, 8, 8)), "label": "l1 @ 0.5"},
        "filters_removed": {"features.0": (3, 6), "features.3": (8, 16)},
        "colour_threshold": 0.25,
    }


def test_every_image_is_written_and_every_src_exists(tmp_path):
    page = write_html_report(tmp_path / "report", results(), figures())
    sources = image_sources(page)
    assert len(sources) == 4
    for src in sources:
        assert not src.startswith(("/", "http:", "https:", "file:"))  # opens from disk, folder movable
        assert (page.parent / src).is_file() and (page.parent / src).stat().st_size > 0
    assert sorted(p.name for p in page.parent.glob("*.png")) == sorted(sources)
    text = page.read_text(encoding="utf-8")
    assert "CSI &gt; 0.25" in text  # the threshold is printed with the colour figure
    assert "<table" in text and "lenet5" in text and "Skipped" not in text


def test_missing_inputs_skip_their_figure_and_say_so(tmp_path):
    folder = tmp_path / "report"
    write_html_report(folder, results(), figures())  # leaves four PNGs behind
    frame = results().drop(columns=["macs_dense", "colour_selective_kept"])
    page = write_html_report(folder, frame, {})
    text = html.unescape(page.read_text(encoding="utf-8"))
    assert image_sources(page) == []
    assert "no column macs_dense" in text and "no column colour_selective_kept" in text
    assert 'figures["attribution"]' in text and 'figures["filters_removed"]' in text
    assert list(folder.glob("*.png")) == []  # stale figures of a previous report are gone
    assert "car" in text  # the table is still there


def test_threshold_column_wins_and_unrecorded_threshold_is_said(tmp_path):
    page = write_html_report(tmp_path / "a", results(colour_threshold=0.3), {})
    assert "CSI &gt; 0.3" in page.read_text(encoding="utf-8")
    page = write_html_report(tmp_path / "b", results(), {})
    assert "threshold not recorded" in page.read_text(encoding="utf-8")


def test_text_is_escaped(tmp_path):
    page = write_html_report(tmp_path, results(criterion="<script>"), {}, title="a < b")
    text = page.read_text(encoding="utf-8")
    assert "<script>" not in text and "&lt;script&gt;" in text and "a &lt; b" in text


def test_empty_results_still_write_a_page(tmp_path):
    page = write_html_report(tmp_path, pd.DataFrame(columns=list(results().columns)), {})
    assert "No results." in page.read_text(encoding="utf-8")
    assert image_sources(page) == []
