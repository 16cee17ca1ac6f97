"""Peak memory and wall time of the plugin on a user's DataLoader of large images: it must stay flat.

A user's loader given with ``--prune-data package.module:callable`` is streamed, never read into
memory, so the peak resident memory of a run must not grow with the number of samples. Each case
runs the plugin as a user would, in a subprocess of its own, from a temporary project:

    python -m pytest --prune-model=benchdata:tiny_cnn --prune-data=benchdata:loader_N \\
        --prune-criteria l1 --prune-ratios 0.3 --prune-update-baselines

The loader yields 3x224x224 images generated from their index with a seeded generator (the dataset
holds nothing), in batches of 64; the model is a small strided CNN that carries ``num_classes``, so
no pass is spent counting classes. ``--prune-update-baselines`` measures every check (accuracy,
MACs, equivalence, attribution, colour, latency). The peak is the subprocess's own maximum resident
set (``os.wait4``).

    python benchmarks/data_memory.py                          # 2,000 and 20,000 samples, streamed
    python benchmarks/data_memory.py --sizes 2000 --forms loader,pair   # vs. the same data in memory
    python benchmarks/data_memory.py --sizes 2000 --workers 2           # the loader's own workers
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PEAK_LIMIT_GB = 2.5  # what the tiny CNN must stay under, whatever the number of samples

_DATA_MODULE = '''
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

WORKERS = {workers}


class GeneratedImages(Dataset):
    """3x224x224 noise made from the sample's index: nothing is held, every pass sees the same data."""

    def __init__(self, count):
        self.count = count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        image = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(index))
        return image, index % 10


def tiny_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 7, stride=4, padding=3), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )
    model.num_classes = 10
    return model


def loader(count):
    return DataLoader(GeneratedImages(count), batch_size=64, num_workers=WORKERS)


def pair(count):
    images, labels = zip(*(GeneratedImages(count)[index] for index in range(count)))
    return torch.stack(images), torch.tensor(labels)
'''


def write_project(folder: Path, sizes: list[int], workers: int) -> None:
    """A project with an ini file and ``benchdata.py``: one ``loader_N`` and ``pair_N`` per size."""
    (folder / "pytest.ini").write_text("[pytest]\n")
    cases = "".join(
        f"\n\ndef {form}_{size}():\n    return {form}({size})\n" for size in sizes for form in ("loader", "pair")
    )
    (folder / "benchdata.py").write_text(textwrap.dedent(_DATA_MODULE).format(workers=workers) + cases)


def run_case(folder: Path, form: str, size: int) -> tuple[float, float, int]:
    """Peak resident GB, wall seconds and exit code of one plugin run."""
    command = [
        sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
        "--prune-model=benchdata:tiny_cnn", f"--prune-data=benchdata:{form}_{size}",
        "--prune-criteria", "l1", "--prune-ratios", "0.3", "--prune-update-baselines",
        "--prune-baselines", str(folder / f"baselines-{form}-{size}"),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = process.stdout.read()  # read before waiting: a full pipe would block the child
    # wait4 gives this child's own peak; RUSAGE_CHILDREN would keep the largest of all cases
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        print(output.decode(errors="replace")[-3000:], file=sys.stderr)
    return usage.ru_maxrss / 2**20, seconds, process.returncode  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="2000,20000", help="comma list of sample counts")
    parser.add_argument("--forms", default="loader", help="loader (streamed) and/or pair (in memory)")
    parser.add_argument("--workers", type=int, default=0, help="num_workers of the user's DataLoader")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    forms = args.forms.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_project(folder, sizes, args.workers)
        for form in forms:
            for size in sizes:
                peak, seconds, code = run_case(folder, form, size)
                rows.append((form, size, args.workers, peak, seconds, code))
                print(f"  {form} {size}: {peak:.2f} GB, {seconds:.0f} s, exit {code}", file=sys.stderr)
    print(f"\n{'form':<8} {'samples':>8} {'workers':>8} {'peak RSS GB':>12} {'wall s':>8} {'exit':>5}")
    for form, size, workers, peak, seconds, code in rows:
        print(f"{form:<8} {size:>8,} {workers:>8} {peak:>12.2f} {seconds:>8.0f} {code:>5}")
    streamed = [row[3] for row in rows if row[0] == "loader"]
    if streamed:
        verdict = "flat" if max(streamed) < PEAK_LIMIT_GB else "OVER"
        print(f"\nstreamed peak {max(streamed):.2f} GB ({verdict}: the limit is {PEAK_LIMIT_GB} GB)")


if __name__ == "__main__":
    main()
