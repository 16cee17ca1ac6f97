"""Wall time of the gates run serially and under pytest-xdist, side by side, and whether both agree.

Each run is the command a user types, in a subprocess of its own from the repository root (so the
committed ``baselines/`` are compared), each with its own ``--prune-report`` folder:

    pytest --prune-model=lenet5 --prune-criteria l1,taylor,attribution,meanvar,cpmc,car,random,bn-error,recal-error -q
    pytest --prune-model=lenet5 --prune-criteria ... -q -n 2 --dist load

An untimed one-method run comes first, so that neither timed run pays for a cold start (the LeNet-5
weights ship with the package and train nothing, but the first run still reads torch, the data and
the bytecode from disk). With ``--repeats`` above 1 the serial and parallel runs alternate, so a
disturbance hits both, and the table shows each mode's median. Both must exit 0 and write the same
``results.csv``: the same rows in the same order, every column equal (bit for bit, as written)
except the timings (``*_seconds``, ``*_ms`` and ``speedup``, which is made of latencies). Under
``-n`` each method must be pruned once: a worker reports a row for every method it pruned, so a
method split over two workers would appear twice in the controller's report; the summary must be
printed once, with one line per method.

Threads: the plugin sets no thread count for pruning and measurement (only the latency loop and
the LeNet-5 recipe pin one thread, and restore it after), so every process gets torch's default,
one thread per core. ``--threads N`` (default 1) sets ``OMP_NUM_THREADS`` for the serial run and
for every worker alike: one thread each keeps two workers from oversubscribing two cores; ``0``
leaves torch's default, what a user's plain ``pytest`` gets.

    python benchmarks/xdist.py                                  # the 27 methods of issue 13, -n 2
    python benchmarks/xdist.py --repeats 3                      # alternate, report the medians
    python benchmarks/xdist.py --criteria l1,random --ratios 0.5 --workers 2 --threads 0

Two bounds are printed beside the ratio (Amdahl: a cost that every process pays once does not
shrink with workers): one from the ``--co`` run (start-up and collection), and a tighter one from a
whole run of one method (also the first attribution and export, which import captum, onnx and
onnxruntime, and the report).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CRITERIA = "l1,taylor,attribution,meanvar,cpmc,car,random,bn-error,recal-error"
TARGET_RATIO = 1.6  # issue 13: serial / -n 2 wall time on 2 cores
# results.csv columns that are clocks, not results: they differ between any two runs
TIMING_COLUMN = re.compile(r"(_seconds|_ms)$|^speedup$")
SUMMARY_TITLE = "pytest-prune summary"


@dataclass
class Run:
    mode: str
    seconds: float
    returncode: int
    output: str
    report: Path


def pytest_command(model: str, criteria: str, ratios: str | None, report: Path, recoveries: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "pytest", f"--prune-model={model}", f"--prune-criteria={criteria}",
               f"--prune-report={report}", "-q",
               "-p", "no:cacheprovider"]  # leave the shared tree's .pytest_cache alone
    if ratios:
        command.append(f"--prune-ratios={ratios}")
    if recoveries:
        command.append(f"--prune-recovery={recoveries}")
    if importlib.util.find_spec("pytest_randomly") is not None:
        command += ["-p", "no:randomly"]  # keep the item order, hence the workers' shares, fixed
    return command


def environment(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def torch_threads(env: dict[str, str]) -> int:
    """What torch.get_num_threads() is in a process with this environment (the plugin keeps it)."""
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                         env=env, capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


def timed_run(mode: str, command: list[str], env: dict[str, str], report: Path) -> Run:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    output = done.stdout + done.stderr
    report.with_suffix(".log").write_text(output, encoding="utf-8")
    return Run(mode, seconds, done.returncode, output, report)


def summary_methods(output: str) -> tuple[int, list[str]]:
    """How many summary sections the run printed, and the methods of the (first) table."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if SUMMARY_TITLE in line]
    if not starts:
        return 0, []
    body = lines[starts[0] + 1:]
    if len(body) < 2 or not body[1].startswith("---"):
        return len(starts), []
    methods = []
    for line in body[2:]:
        if line.startswith("dense ") or not line.strip() or line.startswith("="):
            break
        methods.append(line.split()[1])
    return len(starts), methods


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def report_differences(expected: Path, obtained: Path) -> list[str]:
    """What differs between two results.csv, timing columns aside; empty when they are equal.
    Values are compared as written: pandas writes floats in full, so equal text is equal bits."""
    columns_a, rows_a = read_csv(expected)
    columns_b, rows_b = read_csv(obtained)
    problems = []
    if columns_a != columns_b:
        problems.append(f"columns differ: only in serial {sorted(set(columns_a) - set(columns_b))}, "
                        f"only under -n {sorted(set(columns_b) - set(columns_a))}")
    methods_a = [r.get("method") for r in rows_a]
    methods_b = [r.get("method") for r in rows_b]
    if methods_a != methods_b:
        problems.append(f"rows differ: serial {methods_a}, -n {methods_b}")
        return problems
    compared = [c for c in columns_a if c in columns_b and not TIMING_COLUMN.search(c)]
    for column in compared:
        differing = [a["method"] for a, b in zip(rows_a, rows_b) if a[column] != b[column]]
        if differing:
            problems.append(f"column {column} differs for {', '.join(differing)}")
    return problems


def report_methods(path: Path) -> list[str]:
    return [row["method"] for row in read_csv(path)[1]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--criteria", default=CRITERIA, help=f"(default: {CRITERIA})")
    parser.add_argument("--ratios", default=None, help="--prune-ratios (default: not passed: the plugin's default)")
    parser.add_argument("--recoveries", default=None, help="--prune-recovery (default: not passed: none)")
    parser.add_argument("--workers", type=int, default=2, help="-n (default: 2)")
    parser.add_argument("--dist", default="load", help="--dist (default: load)")
    parser.add_argument("--repeats", type=int, default=1, help="serial and -n runs each, alternated (default: 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="OMP_NUM_THREADS of every process; 0 leaves torch's default (default: 1)")
    args = parser.parse_args()
    if args.repeats < 1 or args.workers < 1 or args.threads < 0:
        parser.error("--repeats and --workers must be at least 1, --threads at least 0")
    env = environment(args.threads)
    threads = torch_threads(env)
    folder = Path(tempfile.mkdtemp(prefix="xdist-bench-"))

    first = args.criteria.split(",")[0]
    warm_ratio = (args.ratios or "0.5").split(",")[0]
    warm = timed_run("warm-up", pytest_command(args.model, first, warm_ratio, folder / "warm"), env, folder / "warm")
    print(f"warm-up ({first}-{warm_ratio}, untimed): exit {warm.returncode}, {warm.seconds:.1f} s")
    if warm.returncode != 0:
        print(warm.output[-3000:])
        return 1

    # The fixed cost every process pays before its first method: start-up (torch and the pipeline
    # imported) and collection (model, data, groups and dense top-1 checked). Serially it is paid
    # once; under -n by each worker, at best side by side.
    listing = pytest_command(args.model, args.criteria, args.ratios, folder / "fixed", args.recoveries)
    fixed = timed_run("fixed", [c for c in listing if not c.startswith("--prune-report")] + ["--co"], env, folder / "fixed")
    print(f"fixed cost (start-up and collection, --co): exit {fixed.returncode}, {fixed.seconds:.1f} s")

    # A whole run of one method, warm: start-up, collection, every check once (the first
    # attribution imports captum, the first export onnx and onnxruntime) and the report. Under -n
    # every worker pays all of it but the report, which the controller draws once they are done:
    # none of it shrinks with workers, so it bounds the ratio more tightly than --co does.
    one = timed_run("one", pytest_command(args.model, first, warm_ratio, folder / "one"), env, folder / "one")
    print(f"one method ({first}-{warm_ratio}, every check, the report): exit {one.returncode}, {one.seconds:.1f} s")

    parallel_flags = ["-n", str(args.workers), "--dist", args.dist]
    runs: list[Run] = []
    for repeat in range(args.repeats):
        for mode in ("serial", f"-n {args.workers}"):
            report = folder / f"{'serial' if mode == 'serial' else 'xdist'}-{repeat}"
            command = pytest_command(args.model, args.criteria, args.ratios, report, args.recoveries)
            if mode != "serial":
                command += parallel_flags
            run = timed_run(mode, command, env, report)
            print(f"{mode:<8} run {repeat + 1}/{args.repeats}: exit {run.returncode}, {run.seconds:.1f} s")
            runs.append(run)

    failed = [r for r in runs if r.returncode != 0]
    for run in failed:
        print(f"\n{run.mode} exited {run.returncode}; the end of its output:\n{run.output[-3000:]}")
    serial_runs = [r for r in runs if r.mode == "serial"]
    parallel_runs = [r for r in runs if r.mode != "serial"]
    reference = serial_runs[0].report / "results.csv"
    differences: list[str] = []
    duplicated: set[str] = set()
    summaries: list[tuple[str, int, list[str]]] = []
    for run in runs:
        csv_path = run.report / "results.csv"
        sections, methods = summary_methods(run.output)
        summaries.append((run.mode, sections, methods))
        if not csv_path.is_file():
            differences.append(f"{run.mode}: no {csv_path}")
            continue
        if run is not serial_runs[0] and reference.is_file():
            differences += [f"{run.mode}: {d}" for d in report_differences(reference, csv_path)]
        if run in parallel_runs:
            names = report_methods(csv_path)
            duplicated |= {m for m in names if names.count(m) > 1}

    serial_s = statistics.median(r.seconds for r in serial_runs)
    parallel_s = statistics.median(r.seconds for r in parallel_runs)
    ratio = serial_s / parallel_s
    print(f"\n{args.model}, criteria {args.criteria}, ratios {args.ratios or 'plugin default'}, "
          f"--dist {args.dist}, {threads} torch thread(s) per process "
          f"({'OMP_NUM_THREADS=' + str(args.threads) if args.threads else 'torch default'}), "
          f"{os.cpu_count()} CPUs")
    print(f"{'mode':<8} {'wall s':>8} {'runs':>5} {'ratio':>7}  {'target':>7}")
    print(f"{'serial':<8} {serial_s:>8.1f} {len(serial_runs):>5} {1.0:>7.2f}")
    print(f"{'-n ' + str(args.workers):<8} {parallel_s:>8.1f} {len(parallel_runs):>5} {ratio:>7.2f}  "
          f"{'>=' + format(TARGET_RATIO, '.1f'):>7} {'met' if ratio >= TARGET_RATIO else 'missed'}")
    # Amdahl: the fixed cost F does not shrink with workers, the rest at best by N
    bound = serial_s / (fixed.seconds + max(serial_s - fixed.seconds, 0.0) / args.workers)
    print(f"fixed cost {fixed.seconds:.1f} s of the serial {serial_s:.1f} s: the ratio can be at most "
          f"{bound:.2f} with {args.workers} workers (fixed cost once, the rest split evenly)")
    tight = serial_s / (one.seconds + max(serial_s - one.seconds, 0.0) / args.workers)
    print(f"one method's whole run {one.seconds:.1f} s of the serial {serial_s:.1f} s: at most {tight:.2f} "
          f"(start-up, collection, first-use imports and the report once, the other methods split evenly)")

    expected = summaries[0][2]
    summary_ok = True
    for mode, sections, methods in summaries:
        ok = sections == 1 and methods == expected and len(methods) > 0
        summary_ok &= ok
        print(f"summary ({mode}): printed {sections}x, {len(methods)} methods{'' if ok else '  <- differs'}")
    print(f"pruned once under -n (one results.csv row per method): "
          f"{'yes' if not duplicated else 'no, more than one row: ' + ', '.join(sorted(duplicated))}")
    print(f"reports equal (results.csv, timing columns aside): {'yes' if not differences else 'no'}")
    for line in differences:
        print(f"  {line}")
    print(f"reports and outputs kept in {folder}")
    return 1 if failed or differences or duplicated or not summary_ok else 0


if __name__ == "__main__":
    sys.exit(main())
