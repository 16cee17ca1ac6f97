"""The HTML report: every image it refers to is on disk beside it, and missing inputs are said."""

import html
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pytest_prune.report.html import _attribution, _top1_vs_macs, write_html_report
from pytest_prune.report.verdicts import baseline_points


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
        "sensitivity": [{"criterion": "l1", "group": g, "fraction": f, "top1": 0.9 - f / 4, "dense_top1": 0.9,
                         "macs_saved": 100 * f} for g in ("features.0", "features.3") for f in (0.25, 0.5)],
    }


def test_every_image_is_written_and_every_src_exists(tmp_path):
    page = write_html_report(tmp_path / "report", results(), figures())
    sources = image_sources(page)
    assert len(sources) == 5
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


def verdict(method, check, outcome, measured=0.5, baseline=0.5, **extra) -> dict:
    return {"model": "lenet5", "method": method, "check": check, "outcome": outcome, "measured": measured,
            "baseline": baseline, "tolerance": 0.01, "better": "higher", "direction": "higher is better",
            "meaning": "a check", "changed": "nothing recorded", "message": None, **extra}


class VerdictRows(HTMLParser):
    """The verdict table's rows in page order, and where the table starts among the page's tags."""

    def __init__(self):
        super().__init__()
        self.rows: list[tuple[str, str, str]] = []
        self.tags: list[str] = []
        self._cells: list[str] | None = None
        self._outcome = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(attrs.get("id") or tag)
        if tag == "tr" and "data-outcome" in attrs:
            self._cells, self._outcome = [], attrs["data-outcome"]
        elif tag == "td" and self._cells is not None:
            self._cells.append("")

    def handle_data(self, data):
        if self._cells:
            self._cells[-1] += data

    def handle_endtag(self, tag):
        if tag == "tr" and self._cells is not None:
            self.rows.append((self._outcome, self._cells[0].strip(), self._cells[1].strip()))
            self._cells = None


def test_the_page_opens_with_the_verdicts_failures_first(tmp_path):
    rows = [verdict("l1-0.25", "top1", "passed"), verdict("car-0.5", "top1", "failed", 0.7, 0.9),
            verdict("l1-0.5", "top1", "written"), verdict("car-0.25", "top1", "error", None, None)]
    page = write_html_report(tmp_path, results(), {}, verdicts=rows)
    parser = VerdictRows()
    parser.feed(page.read_text(encoding="utf-8"))
    assert [r[:2] for r in parser.rows] == [("failed", "car-0.5"), ("error", "car-0.25"),
                                           ("written", "l1-0.5"), ("passed", "l1-0.25")]
    assert parser.tags.index("verdicts") < parser.tags.index("img")  # before every figure
    text = html.unescape(page.read_text(encoding="utf-8"))
    assert "2 of 4 gates did not hold: car-0.5::top1, car-0.25::top1" in text
    assert 'tr.failed{background:' in text  # highlighted by the page's own (inline) style


def test_a_passing_run_says_so_and_a_run_without_gates_says_why(tmp_path):
    no_figures = results().iloc[:0]  # the verdicts alone: nothing to draw
    page = write_html_report(tmp_path / "a", no_figures, {}, verdicts=[verdict("l1-0.5", "top1", "passed")])
    assert "all 1 gates held" in page.read_text(encoding="utf-8")
    page = write_html_report(tmp_path / "b", no_figures, {})
    assert "No gate verdicts were recorded" in page.read_text(encoding="utf-8")


def test_baseline_points_come_from_compared_top1_and_macs_gates():
    rows = [verdict("l1-0.5", "top1", "failed", 0.8, 0.9), verdict("l1-0.5", "macs_reduction", "passed", 0.6, 0.7),
            verdict("car-0.5", "top1", "written", 0.8, 0.8), verdict("car-0.5", "macs_reduction", "written"),
            verdict("random-0.5", "top1", "passed")]  # no MACs baseline: no point
    assert baseline_points(rows) == {"l1-0.5": pytest.approx((0.3, 0.9))}


def test_the_plot_marks_the_dense_model_and_each_baseline(tmp_path):
    frame = results(method=[f"{c}-{r}" for c in ("l1", "car") for r in (0.25, 0.5)], top1_dense=0.95)
    rows = [verdict("l1-0.5", "top1", "passed", 0.8, 0.85), verdict("l1-0.5", "macs_reduction", "passed", 0.7, 0.7)]
    figure, note = _top1_vs_macs(frame, {"verdicts": rows})
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    assert list(lines["dense lenet5"].get_xydata()[0]) == [1.0, 0.95]
    assert list(lines["baseline (hollow)"].get_xydata()[0]) == pytest.approx([0.3, 0.85])
    assert "Hollow markers" in note
    _, plain = _top1_vs_macs(frame, {})
    assert "Hollow" not in plain


def test_attribution_maps_are_drawn_for_every_method(tmp_path):
    maps = np.random.default_rng(1).random((3, 8, 8))
    spec = {"dense": maps, "images": np.ones((3, 3, 8, 8)),
            "pruned": {"l1-0.5": maps * 0.5, "car-0.5": maps[::-1], "random-0.5": maps ** 2}}
    frame = results(method=["l1-0.25", "l1-0.5", "car-0.25", "car-0.5"], attribution_spearman=[0.9, 0.8, 0.7, 0.6])
    figure, _ = _attribution(frame, {"attribution": spec})
    (axes,) = figure.axes  # every row in one image, labelled by its y ticks
    rows = [tick.get_text() for tick in axes.get_yticklabels()]
    assert rows == ["image", "dense", "l1-0.5 (ρ 0.80)", "car-0.5 (ρ 0.60)", "random-0.5"]
    shown = np.asarray(axes.get_images()[0].get_array())
    assert shown.shape == (5 * 8 + 4, 3 * 8 + 2, 3)  # 5 rows of 3 images, 1-pixel gaps between them
    assert list(axes.get_yticks()) == [3.5, 12.5, 21.5, 30.5, 39.5]  # each label at its row's middle
    from matplotlib import colormaps

    l1_row = shown[2 * 9: 2 * 9 + 8, :8]  # the third row (l1-0.5), its first image
    expected = colormaps["inferno"](maps[0] * 0.5 / (maps[0] * 0.5).max())[..., :3]  # each to its own maximum
    assert np.allclose(l1_row, expected)
    assert np.allclose(shown[:8, :8], 1.0)  # the input row: the white images as they are
