"""CAR at the plugin's three ratios on a small CIFAR-10 CNN: the schedules side by side, in one run.

The model is the one of issue 16 (point 6): three 3×3 convs of 32/64/64 filters, each followed by
ReLU and 2×2 max-pooling, then fc 512 and fc 128 (ReLU) and the 10-way classifier; no BatchNorm;
8.55 M MACs per 32×32 image. Its weights are a quick deterministic fit (``--fit-steps`` Adam steps
on shuffled JPEG training images, seed 0): a network that classifies, so that CAR's accuracy
differences are not all zero. Calibration data as the plugin takes it (``cifar10`` calibration
split, batches of 64; CAR keeps its first 256 samples), top-1 on the exact 932 test images of the
model with the plan's channels masked (equal to the pruned model).

For each ratio (0.3, 0.5, 0.7, asked in that order like the plugin's default ``--prune-ratios``),
each path builds a fresh criterion, as the pipeline does (``get_criterion`` per ratio):

* ``per-ratio``: the default schedule (``get_criterion("car")``: rounds sized by the target,
  groups one after another), with the default consumer-delta path (a plain layer's candidates
  scored from its consumer's stored output, ``pytest_prune.criteria._consumer_delta``);
* ``per-ratio, replay only``: the same schedule with every candidate scored from its producers
  (``CAR(delta=False)``: the bit-exact prefix replay); the default's plans must equal its;
* ``nested, from scratch``: the opt-in nested schedule planned straightforwardly for each ratio
  (``CAR(schedule="nested", reuse=False)``);
* ``nested, shared``: the nested schedule as it runs in a pytest process
  (``CAR(schedule="nested")``): one greedy sequence for the run, later ratios only score the
  rounds not scored yet; its plans must equal the from-scratch ones.

The table gives the scoring seconds per ratio, the totals, the ratio of times against the two
other paths, whether the shared path's plans are identical to the from-scratch ones, and top-1 with
the paired standard error of the difference against ``per-ratio`` (same images).

    python benchmarks/car_ci.py [--threads 1] [--fit-steps 60] [--skip-per-ratio] [--grid 16]
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch import nn

from common import data_dir, paired_difference
from pytest_prune.criteria import ScoringContext, get_criterion
from pytest_prune.criteria import _iterative
from pytest_prune.criteria._prefix_cache import PrefixCache
from pytest_prune.criteria.car import CAR
from pytest_prune.data import load_data
from pytest_prune.masking import channels_masked
from pytest_prune.measure import count_model
from pytest_prune.plan import PrunePlan
from pytest_prune.surgery import find_channel_groups

RATIOS = (0.3, 0.5, 0.7)


class SmallCifarCNN(nn.Module):
    """The issue's network: conv 32/64/64 (3×3, ReLU, max-pool 2), fc 512/128, classifier; no BN."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 4 * 4, 512)
        self.fc2 = nn.Linear(512, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc3(F.relu(self.fc2(x)))


def fitted_model(data, steps: int, batch: int = 128) -> nn.Module:
    """A deterministic quick fit: seed 0, Adam, shuffled training images (decoded as drawn)."""
    torch.manual_seed(0)
    model = SmallCifarCNN()
    if steps <= 0:
        return model.eval()
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[: steps * batch]
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for step in range(steps):
        items = [data.train[int(i)] for i in order[step * batch : (step + 1) * batch]]
        x = torch.stack([x for x, _ in items])
        y = torch.tensor([y for _, y in items])
        optimiser.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimiser.step()
    return model.eval()


def correct_per_image(model: nn.Module, groups, plan: PrunePlan, evaluation) -> torch.Tensor:
    with torch.no_grad(), channels_masked(model, groups, plan):
        return torch.cat([(model(x).argmax(1) == y).double() for x, y in evaluation])


def replay_table(model: nn.Module, groups, batches, repeats: int = 5) -> None:
    """Seconds of one replayed pass per group (what every candidate pays), module calls only
    against module and function calls, the outputs compared for identity."""
    x = torch.cat([b for b, _ in batches])
    print(f"\nreplayed pass on {x.shape[0]} samples, ms (median of {repeats}):")
    print(f"{'group':<8} {'modules only':>13} {'+ functions':>12} {'x':>7} identical")
    with torch.no_grad():
        for g in groups:
            row = []
            for functions in (False, True):
                cache = PrefixCache(model, [m.module for m in g.producers()], x, functions=functions)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    out = cache.run(x)
                    times.append(time.perf_counter() - start)
                row.append((sorted(times)[repeats // 2], out))
            (a, out_a), (b, out_b) = row
            print(f"{g.name:<8} {1000 * a:13.1f} {1000 * b:12.1f} {a / b:7.1f} {torch.equal(out_a, out_b)}")


def run_path(make, ctx: ScoringContext) -> tuple[dict[float, PrunePlan], dict[float, float]]:
    _iterative._SEQUENCES.clear()  # every path starts cold, as a fresh pytest process does
    plans, seconds = {}, {}
    for r in RATIOS:
        start = time.perf_counter()
        plans[r] = make().plan(ctx, r, "layerwise")
        seconds[r] = time.perf_counter() - start
        print(f"  ratio {r}: {seconds[r]:.1f} s", flush=True)
    return plans, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fit-steps", type=int, default=60)
    parser.add_argument("--grid", type=int, default=CAR.grid)
    parser.add_argument("--skip-per-ratio", action="store_true", help="leave out the per-ratio schedule (both paths)")
    parser.add_argument("--skip-nested", action="store_true", help="leave out the nested schedule")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(f"cifar10:{data_dir()}")
    model = fitted_model(data, args.fit_steps)
    batches = data.calibration_batches(None, batch_size=64)
    evaluation = [(x, y) for x, y in data.loader("evaluation", 256)]
    groups = find_channel_groups(model, batches[0][0][:2])
    macs = count_model(model, batches[0][0][:1]).macs
    ctx = ScoringContext(model=model, groups=groups, batches=batches)
    dense = correct_per_image(model, groups, PrunePlan(), evaluation)
    print(f"SmallCifarCNN: {macs:,} MACs, groups {[(g.name, g.size) for g in groups]}, dense top-1 "
          f"{100 * float(dense.mean()):.2f} % on {len(dense)} images; {args.threads} thread(s); "
          f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    replay_table(model, groups, batches[:4])
    paths = {}
    if not args.skip_per_ratio:
        print("per-ratio (default):", flush=True)
        paths["per-ratio"] = run_path(lambda: get_criterion("car"), ctx)
        print("per-ratio, prefix replay only:", flush=True)
        paths["per-ratio, replay only"] = run_path(lambda: CAR(delta=False), ctx)
    if not args.skip_nested:
        print("nested, from scratch:", flush=True)
        paths["nested, from scratch"] = run_path(lambda: CAR(schedule="nested", grid=args.grid, reuse=False), ctx)
        print("nested, shared:", flush=True)
        paths["nested, shared"] = run_path(lambda: CAR(schedule="nested", grid=args.grid), ctx)

    # the plans each path must equal: the bit-exact path of its schedule
    exact = {"per-ratio": "per-ratio, replay only", "nested, shared": "nested, from scratch"}
    correct = {name: {r: correct_per_image(model, groups, plans[r], evaluation) for r in RATIOS}
               for name, (plans, _) in paths.items()}
    anchor = "per-ratio" if "per-ratio" in paths else "nested, from scratch"
    total = {name: sum(seconds.values()) for name, (_, seconds) in paths.items()}
    print()
    head = (f"{'path':<22} " + " ".join(f"{'s @' + str(r):>8}" for r in RATIOS)
            + f" {'total s':>8} {'x vs ' + anchor:>18} {'same plans':>10} "
            + " ".join(f"{'top1 @' + str(r):>16}" for r in RATIOS))
    print(head)
    print("-" * len(head))
    for name, (plans, seconds) in paths.items():
        reference = paths.get(exact.get(name, ""), (None,))[0]
        same = "-" if reference is None else "yes" if all(plans[r] == reference[r] for r in RATIOS) else "NO"
        tops = []
        for r in RATIOS:
            top = 100 * float(correct[name][r].mean())
            diff, se = paired_difference(correct[name][r], correct[anchor][r])
            tops.append(f"{top:6.2f}" + (f" {diff:+.1f}±{se:.1f}" if name != anchor else " " * 9))
        print(f"{name:<22} " + " ".join(f"{seconds[r]:8.1f}" for r in RATIOS)
              + f" {total[name]:8.1f} {total[anchor] / total[name]:18.2f}x {same:>10} " + " ".join(f"{t:>16}" for t in tops))
    print(f"\nsame plans: identical at every ratio to the bit-exact path of the schedule ('per-ratio' to "
          f"'per-ratio, replay only', which scores every candidate from its producers; 'nested, shared' to "
          f"'nested, from scratch'; '-': it is that path); "
          f"top-1 ± the paired standard "
          f"error of the difference against '{anchor}', in points; load average after: "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
