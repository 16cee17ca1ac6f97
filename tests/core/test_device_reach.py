"""``--prune-device`` reaches every tensor a run creates, checked without a GPU.

A CPU-only machine has one device, so a tensor left on the host looks like one on the device and
a forgotten ``device=`` goes unnoticed until a GPU run crashes. :class:`DeviceTrap` makes the CPU
play two devices. Every tensor is either a *host* tensor (a :class:`HostTensor`) or a *device*
tensor (a plain one):

* host: what the data loader yields, what a factory call in ``pytest_prune`` makes without a
  ``device=`` (``torch.zeros(n)``, ``torch.tensor(values)``, …), what ``.cpu()`` returns, and
  whatever is computed from these;
* device: the model's parameters and buffers, what ``.to(device)`` returns, what a factory call
  with a ``device=`` makes.

An operation that mixes the two (it would fail on a GPU) is recorded with the line of
``pytest_prune`` that ran it, and then computed on the one CPU, so that one run lists every such
line. The exceptions are those CUDA allows too: copies and indexing across devices, and 0-dim host
tensors (CPU scalars) in device operations. Factory calls inside torch, captum or Torch-Pruning are
left alone: the check is of this package's own calls. What it cannot see: a ``device=`` taken from
a host tensor, and images that reach the model without passing through ``DataBundle.loader``.

The pipeline then runs one method of each kind (a gradient criterion, CAR's greedy scorer,
BatchNorm recalibration with least squares, fine-tuning, every other criterion, both
decompositions, both kinds of release candidate) with every look (attribution retention, colour
selectivity, latency) and the HTML report's figures. On the code before this check it listed 27
lines (taylor's and the attribution criteria's sums, bn-error's and recal-error's grams, the
normalisation constants of the integrated-gradients baseline, the colour index's images, the
report's images and an exported candidate's weights).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils.data import Subset

import pytest_prune
from pytest_prune.data.bundle import DataBundle
from pytest_prune.report import report_figures
from pytest_prune.pipeline.run import PruneRun
from pytest_prune.pipeline.settings import RunSettings

PACKAGE = str(Path(pytest_prune.__file__).parent)
# the functions that make a tensor and take a device= (those torch.set_default_device redirects)
FACTORIES = {
    torch.arange, torch.as_tensor, torch.asarray, torch.empty, torch.empty_strided,
    torch.eye, torch.full, torch.linspace, torch.logspace, torch.ones, torch.rand, torch.randint,
    torch.randn, torch.randperm, torch.range, torch.scalar_tensor, torch.tensor, torch.zeros,
}
# operations CUDA allows across devices: copying and moving, and indexing with host indices
CROSSING = {torch.Tensor.to, torch.Tensor.copy_, torch.Tensor.__getitem__, torch.Tensor.__setitem__}


class HostTensor(torch.Tensor):
    """A tensor on the host, in a run whose device is not the host (see the module docstring)."""


def _host(t):
    return t.as_subclass(HostTensor) if isinstance(t, torch.Tensor) and not isinstance(t, HostTensor) else t


def _device(t):
    return t.as_subclass(torch.Tensor) if isinstance(t, HostTensor) else t


def _package_frame(depth: int = 2):
    """The innermost frame of ``pytest_prune`` code on the stack, or None."""
    frame = sys._getframe(depth)
    while frame is not None and not frame.f_code.co_filename.startswith(PACKAGE):
        frame = frame.f_back
    return frame


def _where(frame) -> str:
    path = Path(frame.f_code.co_filename).relative_to(Path(PACKAGE).parent)
    return f"{path}:{frame.f_lineno} ({frame.f_code.co_name})"


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for v in value for t in _tensors(v)] if isinstance(value, (list, tuple)) else []


def _names_device(args, kwargs) -> bool:
    if kwargs.get("device") is not None or isinstance(kwargs.get("other"), torch.Tensor):
        return True
    return any(isinstance(a, (str, torch.device, torch.Tensor)) for a in args[1:])


class DeviceTrap(TorchFunctionMode):
    """Host and device tensors on one CPU; ``violations`` lists where the two met."""

    def __init__(self):
        super().__init__()
        self.violations: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES:
            result = func(*args, **kwargs)
            given_tensor = func in (torch.as_tensor, torch.asarray) and isinstance(args[0], torch.Tensor)
            caller = sys._getframe(1)
            ours = caller.f_code.co_filename.startswith(PACKAGE)
            return _host(result) if ours and kwargs.get("device") is None and not given_tensor else result
        if func is torch.Tensor.cpu:
            return _host(func(*args, **kwargs))
        if func is torch.Tensor.to and _names_device(args, kwargs):
            return _device(func(*args, **kwargs))
        if func not in CROSSING:
            tensors = _tensors((args, kwargs))
            host = any(isinstance(t, HostTensor) and t.dim() > 0 for t in tensors)
            if host and any(not isinstance(t, HostTensor) for t in tensors):
                frame = _package_frame()
                where = _where(frame) if frame is not None else "outside pytest_prune"
                name = getattr(func, "__name__", str(func))
                found = f"{where}: {name} mixes host and device tensors"
                if found not in self.violations:
                    self.violations.append(found)
        return func(*args, **kwargs)


class _HostBatches:
    """A split's batches as the data loader yields them: on the host."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            yield tuple(_host(t) for t in batch)


NET = '''
from torch import nn

def build():
    """Three colour channels, BatchNorm (for bn recovery) and a linear head (for lsq)."""
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(4),
        nn.Flatten(), nn.Linear(16 * 16, 32), nn.ReLU(), nn.Linear(32, 10),
    )
'''


# every other criterion and both decomposition paths (meanvar+tucker: the statistics method's own plan)
OTHERS = ["recal-error", "bn-error", "attribution", "attribution-corr", "cpmc", "meanvar", "random", "tucker",
          "meanvar+tucker"]


def _settings(module: str) -> RunSettings:
    return RunSettings(
        model=f"{module}:build", data="colour-digits", device="cpu", eval_limit=64,
        calibration_images=64, equivalence_images=8, attribution_images=4, colour_images=32,
        # eager: ONNX Runtime times a CPU copy of the model by design (measure.export._on_cpu), and
        # a run on a GPU defaults to eager; the CPU's two trapped devices would flag that copy's input
        latency_repeats=2, latency_backend="eager",
    )


@pytest.fixture
def candidates(tmp_path, monkeypatch) -> tuple[str, Path, Path]:
    """The test net's module, and a state-dict and an exported candidate of it (made untrapped)."""
    module = f"device_reach_net_{tmp_path.name}"
    (tmp_path / f"{module}.py").write_text(NET)
    monkeypatch.syspath_prepend(tmp_path)
    source = PruneRun(_settings(module))
    pruned = source.method("l1", 0.5, inspect=False).pruned_model
    state = tmp_path / "cut.pt"
    torch.save(pruned.state_dict(), state)
    exported = tmp_path / "cut.pt2"
    torch.export.save(torch.export.export(pruned.eval(), (source.example_input,)), exported)
    return module, state, exported


def test_every_tensor_of_a_run_is_made_on_the_chosen_device(candidates, monkeypatch):
    module, state, exported = candidates
    loader = DataBundle.loader
    monkeypatch.setattr(DataBundle, "loader", lambda self, *a, **kw: _HostBatches(loader(self, *a, **kw)))
    run = PruneRun(_settings(module))
    run.data.train = Subset(run.data.train, range(256))  # two batches of fine-tuning
    error = None
    with DeviceTrap() as trap:
        try:
            run.method("taylor", 0.3)  # with every look: attribution, colour index, latency
            run.method("car", 0.3, inspect=False)
            for method in OTHERS:
                run.method(method, None if method == "meanvar+tucker" else 0.3, inspect=False)
            run.method("l1", 0.3, "bn+lsq", inspect=False)
            run.method("l1", 0.3, "finetune:1", inspect=False)
            run.candidate(state)
            run.candidate(exported)
            report_figures(run, run.results())  # the HTML report's attribution maps
        except Exception as exc:  # reported after the trap's list, which says more
            error = exc
    assert trap.violations == [], "\n".join(trap.violations)
    assert error is None, error


def test_the_trap_fails_where_a_gpu_would():
    """The check above could fail: a host tensor meeting a device one is recorded; a host scalar
    and a copy across are allowed, as CUDA allows them."""
    weight = torch.ones(3, 1, 1)
    with DeviceTrap() as trap:
        host = _host(torch.zeros(3, 1, 1))  # what a factory call in pytest_prune without device= gives
        assert type(torch.zeros(2)) is torch.Tensor  # a call from outside the package is left alone
        torch.add(host, weight)
        weight * _host(torch.tensor(2.0))  # a CPU scalar in a device operation
        weight.copy_(host)
        assert type(host.to("cpu")) is torch.Tensor and type(weight.cpu()) is HostTensor
    assert len(trap.violations) == 1 and "add mixes host and device tensors" in trap.violations[0]
