"""The README's quick-start summary block has the format the plugin prints now (not its numbers):
the same header and rule, and rows whose cells are of the same kind in the same columns."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
TITLE = "pytest-prune summary"


def _readme_block() -> list[str]:
    quick_start = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"^```\w*\n(.*?)^```", quick_start, flags=re.S | re.M) if TITLE in b]
    assert len(blocks) == 1, "the quick start should show one summary block"
    return blocks[0].splitlines()


def _summary(lines: list[str]) -> tuple[list[str], list[str], str]:
    """(title to rule: title, blank line, header, rule; method rows; dense line) of a summary."""
    start = next(i for i, line in enumerate(lines) if TITLE in line)
    head = [line.rstrip() for line in lines[start:start + 4]]
    rows = []
    for line in lines[start + 4:]:
        if line.startswith("dense "):
            return head, rows, line
        rows.append(line)
    raise AssertionError("no 'dense ...' line after the summary rows")


def _cell_kind(cell: str) -> str:
    if cell == "-":
        return "-"
    return "number" if re.fullmatch(r"[+-]?[\d.,]+%?", cell) else "word"


def _shape(row: str) -> list[tuple[str, int]]:
    """Each cell's kind and its column: where it starts (words: left-aligned model, method and
    verdict) or ends (numbers and dashes: right-aligned)."""
    return [(_cell_kind(m.group()), m.start() if _cell_kind(m.group()) == "word" else m.end())
            for m in re.finditer(r"\S+", row.rstrip())]


def _numbers_out(line: str) -> str:
    return re.sub(r"\d[\d,.]*", "N", line)


def test_readme_summary_block_has_the_printed_format(pytester):
    args = ["--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.3", "-p", "no:randomly",
            "--prune-attribution=saliency", f"--prune-baselines={pytester.path / 'bl'}"]
    pytester.runpytest(*args, "--prune-update-baselines").assert_outcomes(passed=7)
    result = pytester.runpytest(*args)  # compared: the verdict is "pass", as in the README
    result.assert_outcomes(passed=7)
    head, rows, dense = _summary(result.stdout.lines)
    readme_head, readme_rows, readme_dense = _summary(_readme_block())

    assert readme_head == head
    assert readme_rows and len(rows) == 1
    for row in readme_rows:
        assert _shape(row) == _shape(rows[0]), f"README row {row!r} is not shaped like {rows[0]!r}"
    assert _numbers_out(readme_dense) == _numbers_out(dense)
