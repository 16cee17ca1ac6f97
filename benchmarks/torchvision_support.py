"""Which torchvision classification models pytest-prune can prune: the support table of docs/results.md.

For every model of ``torchvision.models.list_models(module=torchvision.models)``, the surgery tests'
check at a small input: random weights (``build_model("torchvision:NAME")``, seeded), BatchNorms with
random affine parameters and statistics from a batch (``surgery_cases.make_case``), channel groups
from ``find_channel_groups``, a random plan removing 30 % of every group, and then what every
surgery must give: the pruned model is the masked dense model (within the surgery tests'
``TOLERANCE``, relative to the outputs' scale where that exceeds one), every tensor has the shape
the plan predicts, and parameters drop.

A model is *refused* when ``find_channel_groups`` or ``prune_model`` raises our ``TraceError`` or
``PruneError``; the reason is the first clause of its message. Anything else (a pruned model that
is not the masked one, another exception, a model that takes longer than ``--budget``) is a bug:
``support_row`` raises it as it is, and the table says "bug", never "refused".

    python benchmarks/torchvision_support.py                          # every model, one table
    python benchmarks/torchvision_support.py --models resnet18,convnext_tiny
    python benchmarks/torchvision_support.py --write-docs             # and rewrite docs/results.md's table

Each model runs in a child process forked from this one (the imports are shared, all memory goes
back when the child exits): the largest (regnet_y_128gf, vit_h_14, ~640M parameters) hold several
copies at once. One torch thread, as in the tests. ``tests/surgery/test_torchvision_support.py``
recomputes every row and compares it with the table in docs/results.md.
"""

from __future__ import annotations

import argparse
import faulthandler
import gc
import multiprocessing
import os
import queue
import re
import resource
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

ROOT = Path(__file__).resolve().parents[1]
SUPPORT_DOC = ROOT / "docs" / "results.md"  # the table lives between START and END there
START = "<!-- torchvision-support:start -->"
END = "<!-- torchvision-support:end -->"
COMMAND = "python benchmarks/torchvision_support.py --write-docs"
FRACTION = 0.3
BUDGET_S = 300.0  # per model: 5x the slowest that finish here (vit_h_14, densenet201, regnet_y_128gf: ~60 s)

sys.path.insert(0, str(ROOT / "tests" / "surgery"))  # the surgery tests' calibration and plans
from surgery_cases import TOLERANCE, make_case, random_plan  # noqa: E402

from pytest_prune.equivalence import check_pruned_sizes, max_abs_difference  # noqa: E402
from pytest_prune.errors import PruneError  # noqa: E402
from pytest_prune.modes import eval_mode  # noqa: E402
from pytest_prune.surgery import prune_model  # noqa: E402

DEFAULT_SIZE = 64
# Models that do not run at 64x64 (found by trying 32, 64, 96, ..., 299 on the eval-mode forward).
SIZES = {
    # the training-mode forward must reach the auxiliary head (5x5 pooling, then a 5x5 conv, on
    # Mixed_6e's output) for the head to be recognised as training-only; below 299 it cannot, and
    # the head would be refused as a layer the forward pass never runs
    "inception_v3": 299,
    # window and grid partitions of 7 at every stage fix the input at 224
    "maxvit_t": 224,
    # the patch embedding's position table is built for image_size=224, and forward asserts it
    **{name: 224 for name in ("vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14")},
}


class NotExact(AssertionError):
    """The surgery ran but its result is wrong: a bug, never a refusal."""


@dataclass(frozen=True)
class SupportRow:
    """One model's line of the support table."""

    model: str
    family: str  # torchvision's module of the builder: resnet, convnext, vision_transformer, ...
    size: int  # input height and width of the check
    status: str  # "supported", "refused", or "bug" (from an :class:`Outcome`, never from support_row)
    groups: int | None  # channel groups found; None when find_channel_groups refused
    params_pruned: float | None  # share of the parameters the 30 % plan removes; None when refused
    reason: str  # why refused; "" when supported

    def cells(self) -> list[str]:
        """The markdown table cells, as docs/results.md holds them."""
        groups = "–" if self.groups is None else str(self.groups)
        pruned = "–" if self.params_pruned is None else f"{100 * self.params_pruned:.1f} %"
        return [f"`{self.model}`", self.family, self.status, groups, pruned, self.reason.replace("|", "\\|")]


HEADER = ["model", "family", "status", "groups", "params pruned at 30 %", "reason (first clause of the error)"]


def family(name: str) -> str:
    return torchvision.models.get_model_builder(name).__module__.rsplit(".", 1)[-1]


def _first_clause(text: str) -> str:
    """``text`` up to its first ``; ``, ``: ``, ``, so `` or ``. `` outside parentheses."""
    depth = 0
    for i, char in enumerate(text):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0 and any(text.startswith(stop, i) for stop in ("; ", ": ", ", so ", ". ")):
            text = text[:i]
            break
    return text


def _without_asides(text: str) -> str:
    return re.sub(r" \([^()]*\)", "", text)


def short_reason(message: str) -> str:
    """The first clause of a refusal, shortened to the layer type (and name) and why.

    ``find_channel_groups`` refuses channels tied to a layer it cannot prune exactly with one
    message listing them all ("N channel group(s) cannot be pruned exactly: channel group 'g' is
    tied to 'a.b' (LayerNorm2d), which cannot be pruned exactly: LayerNorm2d normalises over
    channels, so …; …. To prune the rest and keep these, pass --prune-ignore=…"): the first group's
    why stands for them all. A layer refused on its own ("module 'a.b.c' (Linear) was not run by
    the forward pass …") keeps the last two parts of its name. Anything else: the first clause.
    """
    tied = re.search(r"is tied to (.+?), which cannot be pruned exactly: (.+?)(?:; |\. To prune |$)", message)
    if tied:
        layer, why = tied.groups()
        kind = re.fullmatch(r"'[^']*' \((\w+)\)", layer)
        layer = kind.group(1) if kind else layer
        why = _first_clause(why)
        if why.startswith("it "):
            why = f"{layer} {why[3:]}"
        elif not why.startswith(layer):
            why = f"{layer}: {why}"
        decided = " refused by decision;" if "normalises over channels" in why else ""
        return f"{why} ({decided.strip()} --prune-ignore the listed layers)".replace("( ", "(")
    walk = re.search(r"the channels of '([^']*)' cannot be followed", message)
    if walk:
        short = ".".join(walk.group(1).split(".")[-2:])
        return (f"Torch-Pruning's dependency walk from {short!r} does not settle (channels not on dim 1; "
                "--prune-ignore the listed layers)")
    module = re.match(r"module '([^']*)' \((\w+)\) (.+)", message)
    if module:
        name, kind, rest = module.groups()
        short = ".".join(name.split(".")[-2:])
        return f"{kind} {short!r} {_without_asides(_first_clause(rest))}"
    return _first_clause(message)


def _output_scale(model: torch.nn.Module, example: torch.Tensor) -> float:
    """The largest |output| of the dense model in eval mode.

    The surgery tests' absolute tolerance assumes outputs of order one. Some random networks give
    more (inception_v3 at 299x299: logits up to 17.6), and then float32 round-off alone exceeds it:
    there the masked dense model is 1.0e-5 from itself in float64, the pruned one 1.1e-5 from it in
    float32 and 3e-14 in float64. So the tolerance is relative once outputs exceed one.
    """
    with torch.no_grad(), eval_mode(model):
        return float(model(example).abs().max())


def support_row(name: str) -> SupportRow:
    """Check one model (see the module docstring); raises on anything but a clean refusal."""
    size = SIZES.get(name, DEFAULT_SIZE)
    row = dict(model=name, family=family(name), size=size)
    case = None
    try:
        try:
            case = make_case(f"torchvision:{name}", size)
        except PruneError as refused:
            return SupportRow(**row, status="refused", groups=None, params_pruned=None,
                              reason=short_reason(str(refused)))
        plan = random_plan(case.groups, FRACTION, seed=7)
        try:
            pruned = prune_model(case.model, case.groups, plan, case.example)
        except PruneError as refused:
            return SupportRow(**row, status="refused", groups=len(case.groups), params_pruned=None,
                              reason=short_reason(str(refused)))
        diff = max_abs_difference(case.model, pruned, case.groups, plan, case.example)
        tolerance = TOLERANCE * max(1.0, _output_scale(case.model, case.example))
        if not diff <= tolerance:
            raise NotExact(f"{name}: the pruned model differs from the masked dense model by {diff} "
                           f"(tolerance {tolerance:.3g})")
        sizes = check_pruned_sizes(case.model, pruned, case.groups, plan)
        if not sizes.ok:
            raise NotExact(f"{name}: pruned sizes are not the predicted ones: {sizes}")
        if not sizes.pruned_parameters < sizes.dense_parameters:
            raise NotExact(f"{name}: the plan removed no parameters: {sizes}")
        del pruned
        return SupportRow(**row, status="supported", groups=len(case.groups),
                          params_pruned=1 - sizes.pruned_parameters / sizes.dense_parameters, reason="")
    finally:
        del case
        gc.collect()


@dataclass(frozen=True)
class Outcome:
    """What one model's child process gave: its row, or the bug (traceback or time-out) instead."""

    name: str
    seconds: float
    peak_gib: float
    row: SupportRow | None
    bug: str = ""  # "" when ``row`` is set

    def as_row(self) -> SupportRow:
        """The table row; a bug is tabled as status "bug" with its exception's last line."""
        if self.row is not None:
            return self.row
        size = SIZES.get(self.name, DEFAULT_SIZE)
        last = self.bug.strip().splitlines()[-1] if self.bug.strip() else "no result"
        return SupportRow(self.name, family(self.name), size, "bug", None, None, last)


def _child(name: str, results) -> None:
    """Child process: one model's row (or the bug's traceback), its seconds and peak GiB."""
    torch.set_num_threads(1)
    start = time.perf_counter()
    row, bug = None, ""
    try:
        row = support_row(name)
    except Exception:  # a bug: shown in full by the parent, never tabled as a refusal
        bug = traceback.format_exc()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    results.put(Outcome(name, time.perf_counter() - start, peak, row, bug))


def _peak_gib(pid: int) -> float:
    """A running process's peak resident memory (VmHWM), in GiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def run_isolated(name: str, budget_s: float) -> Outcome:
    """:func:`support_row` in a child forked from this process (the imports are shared, and all its
    memory goes back when it exits), killed after ``budget_s``: a model that takes longer is a bug
    too (the child's Python stack is printed as it is killed, to show where it was)."""
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_child, args=(name, results))
    start = time.perf_counter()
    child.start()
    try:
        while time.perf_counter() - start < budget_s:
            try:
                return results.get(timeout=1.0)
            except queue.Empty:
                if not child.is_alive() and results.empty():  # killed for memory, or crashed
                    return Outcome(name, time.perf_counter() - start, float("nan"), None,
                                   f"the check's process died (exit code {child.exitcode})")
        peak = _peak_gib(child.pid)
        os.kill(child.pid, signal.SIGABRT)  # faulthandler (enabled in main) prints the child's stack
        return Outcome(name, time.perf_counter() - start, peak, None,
                       f"find_channel_groups/prune_model did not finish within {budget_s:.0f} s")
    finally:
        child.join(10)
        if child.is_alive():
            child.kill()
            child.join()


def table(rows: list[SupportRow]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + " --- |" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    supported = sum(row.status == "supported" for row in rows)
    lines += ["", f"{supported} of {len(rows)} supported; inputs {DEFAULT_SIZE}×{DEFAULT_SIZE} except "
              + ", ".join(f"`{n}` {s}×{s}" for n, s in sorted(SIZES.items()))]
    return "\n".join(lines)


def documented_rows(text: str) -> dict[str, list[str]]:
    """Model name → its cells in the documented support table (between the markers)."""
    if START not in text or END not in text:
        return {}
    section = text.split(START, 1)[1].split(END, 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    return rows


def write_table(rows: list[SupportRow]) -> None:
    text = SUPPORT_DOC.read_text()
    if START not in text or END not in text:
        sys.exit(f"{SUPPORT_DOC} has no {START} … {END} section to replace")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    SUPPORT_DOC.write_text(f"{head}{START}\n{table(rows)}\n{END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", help="comma-separated torchvision names (default: every one)")
    parser.add_argument("--budget", type=float, default=BUDGET_S,
                        help=f"seconds one model may take before it counts as a bug (default {BUDGET_S:.0f})")
    parser.add_argument("--write-docs", action="store_true",
                        help="replace the table in docs/results.md with this run's (every model only)")
    args = parser.parse_args()
    every = torchvision.models.list_models(module=torchvision.models)
    names = args.models.split(",") if args.models else every
    if args.write_docs and names != every:
        sys.exit("--write-docs rewrites the whole table: run it without --models")
    faulthandler.enable()  # inherited by the children: a killed one shows where it was
    outcomes: list[Outcome] = []
    for name in names:
        outcome = run_isolated(name, args.budget)
        outcomes.append(outcome)
        row = outcome.as_row()
        print(f"{name:<22} {outcome.seconds:7.1f} s {outcome.peak_gib:5.1f} GiB  {row.size:>3}px  "
              f"{row.status:<9}  {row.reason}", flush=True)
        if outcome.bug.strip() != row.reason:  # the traceback
            print(outcome.bug, flush=True)
    print(f"\ntotal {sum(o.seconds for o in outcomes):.1f} s for {len(names)} models\n")
    rows = [o.as_row() for o in outcomes]
    print(table(rows))
    bugs = [o.name for o in outcomes if o.bug]
    if bugs:
        print(f"\n{len(bugs)} model(s) hit a bug, not a refusal (status 'bug'; their tests fail unless "
              f"marked xfail): {', '.join(bugs)}")
    if args.write_docs:
        write_table(rows)
        print(f"\nrewrote the table in {SUPPORT_DOC}")
    if bugs:
        sys.exit(1)


if __name__ == "__main__":
    main()
