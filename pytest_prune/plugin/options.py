"""Command-line options and ini keys of the plugin, and their parsing into run settings.

Every option ``--prune-X`` is also an ini key ``prune_X``; the command line wins. Parsing errors are
:class:`SpecError` with a message that names the option, the value and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from ..allocations import ALLOCATIONS, BUDGET_ALLOCATION, GLOBAL_CRITERIA
from ..errors import SpecError

DEFAULT_CRITERIA = "l1,random"
DEFAULT_RATIOS = "0.3,0.5,0.7"
DEFAULT_BASELINES = "baselines"

# (option name without dashes, ini type, default, help)
_OPTIONS: list[tuple[str, str, str | None, str]] = [
    ("prune-model", "string", None,
     "model spec to gate: lenet5, cifar-resnet20/32/44/56/110, torchvision:NAME or "
     "package.module:callable. Gate items are generated only when it is set (default: unset)."),
    ("prune-name", "string", None,
     "name of the model in gate ids and its baseline folder (default: from the model spec, "
     "mypkg.net:build -> mypkg.net.build)."),
    ("prune-weights", "string", None,
     "state dict to load into the model, read with torch.load(weights_only=True) "
     "(default: none; lenet5 and lenet5-colour then use their shipped trained weights)."),
    ("prune-data", "string", None,
     "data spec: digits, cifar10:DIR, cifar10-jpeg:DIR, synthetic:CxHxW:K or "
     "package.module:callable (default: the model's own default data)."),
    ("prune-criteria", "string", DEFAULT_CRITERIA,
     f"comma list of pruning criteria (default: {DEFAULT_CRITERIA})."),
    ("prune-ratios", "string", DEFAULT_RATIOS,
     "comma list of targets: channel fractions to remove (0.5), or budgets of MACs or parameters "
     f"to keep (macs:0.5, params:0.6) (default: {DEFAULT_RATIOS})."),
    ("prune-recovery", "string", "none",
     "comma list of recoveries run after surgery, each measured separately: none, bn, lsq, "
     "finetune:E, finetune-kd:E, or steps joined by + such as lsq+bn (default: none)."),
    ("prune-allocation", "string", None,
     f"how a ratio is spread over layers, for every criterion: {' or '.join(ALLOCATIONS)} (default: "
     f"each criterion's own: global for {', '.join(GLOBAL_CRITERIA)}; layerwise for the others; "
     f"{BUDGET_ALLOCATION} instead of layerwise for a macs:/params: budget; the one used is recorded in "
     "each baseline)."),
    ("prune-sensitivity-recovery", "string", "none",
     "recovery inside the sensitivity analysis of --prune-allocation sensitivity (each group "
     "pruned alone on calibration data): none, or lsq to refit only that group's consumers "
     "(default: none)."),
    ("prune-baselines", "string", DEFAULT_BASELINES,
     f"directory of stored baselines, one folder per model (default: {DEFAULT_BASELINES}/ "
     "beside the ini file pytest found, else in the folder pytest was started from)."),
    ("prune-seed", "string", "0", "seed for criteria and data subsets (default: 0)."),
    ("prune-report", "string", None,
     "directory to write results.csv and results.json into (default: no report)."),
    ("prune-device", "string", "cpu",
     "torch device every model and tensor of the run is on: cpu, cuda, cuda:N or auto (CUDA if "
     "present) (default: cpu)."),
    ("prune-attribution", "string", "integrated_gradients",
     "attribution method of the attribution-retention check: integrated_gradients, saliency or "
     "gradcam (default: integrated_gradients)."),
    ("prune-eval-limit", "string", None,
     "evaluate on the first N evaluation samples only: a quick gate; a setting of the baselines, "
     "so they are written and compared with the same N (default: every sample)."),
    ("prune-min-speedup", "string", None,
     "also gate the CPU speed-up (dense latency / compressed latency, median of repeated runs "
     "on one evaluation batch) against this minimum; machine-specific, so not a stored baseline "
     "(default: not gated)."),
    ("prune-latency-backend", "string", None,
     "what the speed-up is timed in: eager (PyTorch) or onnxruntime (the exported model in ONNX "
     "Runtime, one thread; needs the onnx extra); recorded in results.csv (default: onnxruntime "
     "with the onnx extra on a CPU run, else eager)."),
    ("prune-round-to", "string", None,
     "keep every pruned group's channel count a multiple of N (vector width, e.g. 8): the count "
     "is rounded to the nearest multiple, never below N; budgets are searched with it; a setting "
     "of the baselines (default: 1, no rounding)."),
]
IGNORE_HELP = (
    "layers whose channels are kept (never pruned): comma list of module names or glob patterns "
    "such as 'features.0,classifier.*'; as an ini key, one per line (default: none)."
)
CANDIDATE_HELP = (
    "a compressed release candidate to gate against the dense --prune-model: a state dict with "
    "fewer channels (read with weights_only=True) or a torch.export program (.pt2); repeat the "
    "option for several (default: none)."
)
_FLAGS: list[tuple[str, str]] = [
    ("prune-update-baselines",
     "write the measured values as the new baselines instead of comparing (default: compare)."),
    ("prune-export",
     "gate the ONNX export: export_equivalence, the model exported with torch.onnx.export "
     "(opset 17, dynamic batch) and run in ONNX Runtime against PyTorch's outputs, one item per "
     "method and candidate; skipped with the install hint without the onnx extra (default: on; "
     "--prune-no-export or the ini key prune_export = false leaves it out)."),
    ("prune-no-export",
     "leave the export_equivalence gate out (default: it is gated)."),
    ("prune-allow-pickle",
     "load --prune-weights as a full pickle. A pickle can run arbitrary code when loaded: use "
     "this only for files you trust (default: weights_only loading)."),
]


DEFAULT_ON = ("prune-export",)  # flags whose ini key defaults to true


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("prune", "pytest-prune: pruning gates for compressed CNNs")
    for name, ini_type, default, help_text in _OPTIONS:
        group.addoption(f"--{name}", dest=name.replace("-", "_"), default=None, help=help_text)
        parser.addini(name.replace("-", "_"), help_text, type=ini_type, default=default)
    group.addoption("--prune-ignore", dest="prune_ignore", default=None, help=IGNORE_HELP)
    parser.addini("prune_ignore", IGNORE_HELP, type="linelist", default=[])
    group.addoption("--prune-candidate", dest="prune_candidate", action="append", default=None,
                    help=CANDIDATE_HELP)
    parser.addini("prune_candidate", CANDIDATE_HELP, type="paths", default=[])
    for name, help_text in _FLAGS:
        group.addoption(f"--{name}", dest=name.replace("-", "_"), action="store_true",
                        default=None, help=help_text)
        if name != "prune-no-export":  # the ini key prune_export = false says it
            parser.addini(name.replace("-", "_"), help_text, type="bool", default=name in DEFAULT_ON)


def get(config: pytest.Config, name: str):
    """An option's value: the command line if given, else the ini key, else its default."""
    key = name.replace("-", "_")
    value = config.getoption(key)
    if value is None:
        value = ini(config, key)
    return value if value != "" else None


_LOST_INI = pytest.StashKey[tuple]()


def _lost_ini(config: pytest.Config) -> tuple[Path | None, dict]:
    """The ini file pytest would have found from the invocation folder, and its values, when pytest
    found none: ``--prune-report /tmp/r`` (an existing path as a separate argument) makes pytest
    look for its ini file from ``/``, since plugin options are not yet known when it chooses its
    rootdir. Uses pytest's own search (a private function: if it moves, nothing is recovered)."""
    if config.inipath is not None:
        return None, {}
    if _LOST_INI in config.stash:
        return config.stash[_LOST_INI]
    config.stash[_LOST_INI] = _locate_ini(config)
    return config.stash[_LOST_INI]


def _locate_ini(config: pytest.Config) -> tuple[Path | None, dict]:
    try:
        from _pytest.config.findpaths import locate_config

        invocation = Path(config.invocation_params.dir)
        _, inipath, values, *_ = locate_config(invocation, [invocation])
    except Exception:  # pragma: no cover - pytest internals changed
        return None, {}
    return inipath, {k: getattr(v, "value", v) for k, v in (values or {}).items()}


def ini(config: pytest.Config, key: str):
    """``config.getini(key)``, or the same key of the ini file pytest lost (see :func:`_lost_ini`)."""
    inipath, values = _lost_ini(config)
    if inipath is None or key not in values:
        return config.getini(key)
    raw = values[key]
    if key in ("prune_ignore", "prune_candidate"):  # linelist / paths
        lines = raw if isinstance(raw, list) else [line.strip() for line in str(raw).splitlines()]
        lines = [line for line in lines if line]
        return [inipath.parent / line for line in lines] if key == "prune_candidate" else lines
    if key in ("prune_update_baselines", "prune_allow_pickle", "prune_export"):
        return str(raw).strip().lower() in ("1", "true", "yes", "on")
    return raw


def split_list(value: str | None, option: str) -> list[str]:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    if not items:
        raise SpecError(f"--{option} is empty; give a comma-separated list")
    return items


def parse_ratios(value: str | None) -> list:
    """Channel fractions (floats) and budgets (:class:`~pytest_prune.pipeline.budget.Budget`)."""
    from ..pipeline.targets import parse_target

    out = []
    for item in split_list(value, "prune-ratios"):
        target = parse_target(item)
        if isinstance(target, float) and target == 0.0:
            raise SpecError(
                f"--prune-ratios: {item} is outside (0, 1); a ratio is the fraction of channels "
                "removed, e.g. 0.5 removes half"
            )
        out.append(target)
    return out


def parse_recoveries(value: str | None) -> list[str]:
    from ..method_names import recovery_name  # torch-free for the plain steps

    return [recovery_name(item) for item in split_list(value or "none", "prune-recovery")]


def parse_min_speedup(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise SpecError(f"--prune-min-speedup {value!r} is not a number (e.g. 1.2)") from None


def parse_seed(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        raise SpecError(f"--prune-seed {value!r} is not an integer") from None


@dataclass(frozen=True)
class GateOptions:
    """The parsed options that shape which gate items exist and how they compare."""

    model: str
    criteria: list[str]
    ratios: list  # floats and budgets
    recoveries: list[str]
    baselines: Path
    update: bool
    report: Path | None
    min_speedup: float | None = None
    candidates: tuple[Path, ...] = ()


def candidate_paths(config: pytest.Config) -> tuple[Path, ...]:
    given = config.getoption("prune_candidate")
    paths = [invocation_path(config, p) for p in given] if given else list(ini(config, "prune_candidate"))
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise SpecError(f"--prune-candidate: no such file {missing[0]!r}")
    return tuple(Path(p) for p in paths)


def invocation_path(config: pytest.Config, value: str | Path) -> Path:
    """A path option as the user meant it: relative paths from the folder pytest was started in."""
    path = Path(value)
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


def project_dir(config: pytest.Config) -> Path:
    """The project's folder: where pytest's ini file is, else where pytest was started.

    Not pytest's rootdir: pytest folds every existing path on the command line into its choice of
    rootdir, so ``--prune-report /tmp/r`` (space form) would move the baselines to ``/tmp``.
    """
    if config.inipath is not None:
        return Path(config.inipath).parent
    lost, _ = _lost_ini(config)
    return lost.parent if lost is not None else Path(config.invocation_params.dir)


def baselines_dir(config: pytest.Config) -> Path:
    """``--prune-baselines``: relative to the invocation folder when given on the command line, to the
    ini file's folder when given as an ini key; by default ``baselines/`` in :func:`project_dir`."""
    given = config.getoption("prune_baselines")
    if given:
        return invocation_path(config, given)
    path = Path(ini(config, "prune_baselines") or DEFAULT_BASELINES)
    return path if path.is_absolute() else project_dir(config) / path


def run_settings(config: pytest.Config, model: str):
    """The :class:`~pytest_prune.pipeline.run.RunSettings` the options describe, for ``model``."""
    from ..pipeline.settings import RunSettings

    return RunSettings(
        model=model,
        name=_name(config),
        ignore=_ignore(config),
        eval_limit=_positive_int(get(config, "prune-eval-limit"), "prune-eval-limit"),
        weights=_weights(config),
        allow_pickle=bool(get(config, "prune-allow-pickle")),
        data=get(config, "prune-data"),
        seed=parse_seed(get(config, "prune-seed")),
        allocation=get(config, "prune-allocation"),  # None: each criterion's natural allocation
        sensitivity_recovery=get(config, "prune-sensitivity-recovery") or "none",
        device=parse_device(get(config, "prune-device")),
        attribution_method=parse_attribution(get(config, "prune-attribution")),
        latency_backend=parse_latency_backend(get(config, "prune-latency-backend")),
        round_to=_positive_int(get(config, "prune-round-to"), "prune-round-to") or 1,
        export_gate=export_gated(config),
    )


def export_gated(config: pytest.Config) -> bool:
    """Whether export_equivalence is gated: yes unless ``--prune-no-export`` or ``prune_export =
    false``; ``--prune-export`` (the opt-in flag of earlier releases) overrides the ini key."""
    if config.getoption("prune_no_export"):
        return False
    return bool(get(config, "prune-export"))


def parse_latency_backend(value: str | None) -> str | None:
    """``--prune-latency-backend``, checked here (unknown, or onnxruntime without the extra, is a
    usage error); None leaves the choice to :func:`pytest_prune.measure.latency.default_backend`."""
    if value is None:
        return None
    from ..measure.latency import check_backend  # imports torch: only when gates are asked for

    return check_backend(value)


def _positive_int(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise SpecError(f"--{option} {value!r} is not a whole number of at least 1 (e.g. 256)")
    return number


def _ignore(config: pytest.Config) -> tuple[str, ...]:
    given = config.getoption("prune_ignore")
    items = given.split(",") if given is not None else ini(config, "prune_ignore")
    return tuple(sorted({item.strip() for item in items if item.strip()}))


def _name(config: pytest.Config) -> str | None:
    name = get(config, "prune-name")
    if name is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", name):
        raise SpecError(f"--prune-name {name!r}: use letters, digits and . _ + - only (it names a folder)")
    return name


def _weights(config: pytest.Config) -> str | None:
    given = config.getoption("prune_weights")
    if given:
        return str(invocation_path(config, given))
    value = ini(config, "prune_weights")  # an ini path is relative to the ini file's folder
    return str(project_dir(config) / value) if value and not Path(value).is_absolute() else (value or None)


def parse_device(value: str | None) -> str:
    """``--prune-device`` checked against this machine: an unknown device, or CUDA where there
    is none, is a :class:`SpecError` naming the option and the devices there are."""
    if (value or "cpu").strip() == "cpu":  # every machine has one: no torch needed to check it
        return "cpu"
    from ..devices import resolve_device  # imports torch: only when gates are asked for

    return str(resolve_device(value, "--prune-device"))


def parse_attribution(value: str | None) -> str:
    methods = ("integrated_gradients", "saliency", "gradcam")
    value = value or "integrated_gradients"
    if value not in methods:
        raise SpecError(f"--prune-attribution {value!r} is unknown; use one of {', '.join(methods)}")
    return value
