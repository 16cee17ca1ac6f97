"""Generated gate items: one per (model, method, check), compared with the stored baseline."""

from __future__ import annotations

import pytest

from functools import partial
from pathlib import Path
from typing import Callable

from ..errors import BaselineError, PruneError, TraceError
from ..gating.baselines import Baseline, BaselineStore, CheckBaseline, settings_mismatch
from ..gating.checks import CHECKS, SPEEDUP
from ..gating.verdict import compare, new_baselines
from ..measure.export import EXPORT_LIMIT, ONNX_HINT, onnx_available
from ..models.zoo import declared_channels
from ..pipeline.methods import get_method, is_ratio_free
from ..pipeline.provenance import count_change, data_change, dense_model_change, explain_changes, plan_change
from ..pipeline.results import MethodResult
from ..pipeline.targets import candidate_id, method_id
from .session import GateState


EXPORT_CHECK = "export_equivalence"  # skipped without the onnx extra (pytest_prune.measure.export)


class PruneFailure(Exception):
    """A gate did not hold; the message is the whole explanation."""


def unused_baselines(root: Path, model: str, methods: set[str]) -> list[str]:
    """Baseline files of ``model`` under ``root`` that no generated gate reads."""
    store = BaselineStore(root)
    return [f"{m}.json" for m in store.methods(model) if m not in methods]


def changed_since(stored: dict | None, current: dict) -> str:
    """The verdict table's "what changed since the baseline": the failure explanation, except
    that a gate where nothing recorded moved says just that (no rounding to blame when it held)."""
    moved = stored and any(f(stored, current) for f in (dense_model_change, data_change, plan_change, count_change))
    if stored and not moved and stored.get("compressed_digest") == current.get("compressed_digest"):
        return "nothing recorded (same dense model, data, plan and compressed weights)"
    return explain_changes(stored, current)


def model_checks(state: GateState) -> list[str]:
    """The checks that can fail on this model: colour selectivity needs a colour input. Listing
    the gates (``--collect-only``) builds no model and reads no data, so the channel count comes
    from the spec (built-in and torchvision models); a factory's gates list the check, since only
    its model or data would tell."""
    settings = state.settings or state.run.settings
    checks = [c for c in CHECKS if c != EXPORT_CHECK or settings.export_gate]  # --prune-no-export
    if state.listing_only:  # nothing is built: the spec alone may say the channel count
        channels = declared_channels(state.run.settings.model)
        return [c for c in checks if c != "colour_selectivity" or channels is None or channels >= 3]
    return [c for c in checks if c != "colour_selectivity" or state.run.colour_input]


class ModelGates(pytest.Collector):
    """The gate items of one model: ``<model>::<criterion>-<ratio>::<check>``."""

    def __init__(self, *, state: GateState, **kwargs):
        super().__init__(**kwargs)
        self.state = state

    def collect(self):
        opts = self.state.options
        for criterion in opts.criteria:
            # ratio-free methods (tucker-vbmf, meanvar+tucker) run once, not per ratio
            ratios = [None] if is_ratio_free(criterion) else opts.ratios
            # equivalence and colour checks need removed channels; pure decompositions have none
            checks = [
                c for c in model_checks(self.state) if CHECKS[c].applies_to(get_method(criterion))
            ]
            if opts.min_speedup is not None:
                checks.append(SPEEDUP.name)
            for ratio in ratios:
                for recovery in opts.recoveries:
                    method = method_id(criterion, ratio, recovery)
                    measure = partial(self.state.run.method, criterion, ratio, recovery, inspect=False)
                    for check in checks:
                        yield GateItem.from_parent(
                            self, name=f"{method}::{check}", state=self.state,
                            method=method, measure=measure, check=check,
                        )


class CandidateGates(pytest.Collector):
    """The gate items of release candidates: ``candidate::<file stem>::<check>``."""

    def __init__(self, *, state: GateState, **kwargs):
        super().__init__(**kwargs)
        self.state = state

    def collect(self):
        checks = [c for c in model_checks(self.state) if c != "surgery_equivalence"]
        if self.state.options.min_speedup is not None:
            checks.append(SPEEDUP.name)
        for path in self.state.options.candidates:
            measure = partial(self.state.run.candidate, path, inspect=False)
            for check in checks:
                yield GateItem.from_parent(
                    self, name=f"{Path(path).stem}::{check}", state=self.state,
                    method=candidate_id(path), measure=measure, check=check,
                )


class GateItem(pytest.Item):
    """One check of one compression method against its stored baseline."""

    def __init__(
        self, *, state: GateState, method: str, measure: Callable[[], MethodResult], check: str, **kwargs
    ):
        super().__init__(**kwargs)
        self.state = state
        self.method = method
        self.measure = measure
        self.check = check
        self.add_marker("prune")

    def setup(self) -> None:
        """Prune and measure the method (once per run: later items of the method find it
        cached), so that pytest reports the cost as this item's setup (``--durations``). A
        failure is kept and raised again by the method's other items, which do not re-run it."""
        failure = self.state.failures.get(self.method)
        if failure is not None:
            self.state.record(self.method, self.check, "error")
            self.state.describe(self.method, self.check, message=f"{type(failure).__name__}: {failure}")
            raise failure
        try:
            self.result = self.measure()
        except Exception as exc:
            self.state.failures[self.method] = exc
            self.state.record(self.method, self.check, "error")
            self.state.describe(self.method, self.check, message=f"{type(exc).__name__}: {exc}")
            raise

    def _repr_failure_py(self, excinfo, style=None):
        # setup errors are shown through here (repr_failure serves the call phase): our errors
        # explain themselves, without torch's traceback
        if isinstance(excinfo.value, PruneError) and excinfo.value is self.state.failures.get(self.method):
            return f"{type(excinfo.value).__name__}: {excinfo.value}"
        return super()._repr_failure_py(excinfo, style=style)

    def runtest(self) -> None:
        run = self.state.run
        result = self.result
        if self.check == EXPORT_CHECK and not onnx_available():  # skipped, never passed unmeasured
            pytest.skip(f"{self.check} not measured: {ONNX_HINT}")
        run.complete(result, self.check)
        if self.check == EXPORT_CHECK and result.export_error:  # the exporter's reason, in one line
            raise TraceError(result.export_error)
        if self.state.options.update:  # a baseline file holds every check: measure them all
            run.complete(result, *model_checks(self.state))
        store = BaselineStore(self.state.options.baselines)
        settings = run.settings_record(result.recovery, result.criterion, result.target)
        if self.check == SPEEDUP.name:
            minimum = CheckBaseline(self.state.options.min_speedup or 0.0, 0.0)
            self.state.describe(self.method, self.check, changed="not a baseline: --prune-min-speedup")
            self._judge(compare(self.check, result.checks()[self.check], minimum), "--prune-min-speedup")
            return
        if self.state.options.update:
            self._write_baseline(store, result, settings)
            return
        baseline = store.load(run.name, self.method)
        path = store.path(run.name, self.method)
        differences = settings_mismatch(baseline.settings, settings)
        moved_data = data_change(baseline.provenance, result.provenance)
        if moved_data and not differences:
            differences = [f"data spec {settings['data']!r} now gives other data ({moved_data})"]
        if differences:
            raise BaselineError(
                f"baseline {path} was measured under other settings "
                f"({'; '.join(differences)}); rerun with the baseline's settings, or re-measure "
                "with --prune-update-baselines"
            )
        dense_moved = dense_model_change(baseline.provenance, result.provenance)
        if dense_moved:  # a new release of the dense model is compared, never silently
            self.state.note(f"{run.name}: {dense_moved} — compared against baselines of the old one")
        if self.check not in result.checks():
            raise PruneFailure(
                f"{self.nodeid}: {self.check} could not be measured for {self.method} "
                f"({'; '.join(result.notes[-2:]) or 'no filters could be matched to the dense model'})"
            )
        if self.check == EXPORT_CHECK and self.check not in baseline.checks:
            self._judge_export_on_its_limit(result)
            return
        if self.check not in baseline.checks:
            raise BaselineError(
                f"baseline {path} has no value for {self.check}; add it with --prune-update-baselines"
            )
        outcome = compare(self.check, result.checks()[self.check], baseline.checks[self.check])
        self.state.describe(self.method, self.check, changed=changed_since(baseline.provenance, result.provenance))
        if not outcome.passed:
            obtained = store.save_obtained(
                Baseline(run.name, self.method, settings,
                         new_baselines(result.checks(), baseline.checks), result.provenance)
            )
            why = explain_changes(baseline.provenance, result.provenance)
            self._judge(outcome, f"{why}\n  baseline file: {path}\n  measured values: {obtained}")
        self._judge(outcome, f"baseline file: {path}")

    def _judge_export_on_its_limit(self, result: MethodResult) -> None:
        """A baseline written before the export gate was on by default has no export value: the
        export is judged on its hard limit alone (a failing export raised before this), so that
        upgrading the plugin fails no build that has not regressed."""
        limit = CheckBaseline(EXPORT_LIMIT, 0.0)
        self.state.note(
            f"baselines with no stored {EXPORT_CHECK} (written before it was gated by default) are "
            f"judged against its {EXPORT_LIMIT:g} limit; --prune-update-baselines stores it"
        )
        self.state.describe(self.method, self.check, changed=f"no stored value: the {EXPORT_LIMIT:g} limit")
        self._judge(compare(self.check, result.checks()[self.check], limit), f"the {EXPORT_LIMIT:g} limit")

    def _judge(self, outcome, source: str) -> None:
        self.state.record(self.method, self.check, "passed" if outcome.passed else "failed")
        self.state.describe(self.method, self.check, measured=outcome.measured, baseline=outcome.baseline,
                            tolerance=outcome.tolerance, message=outcome.explain())
        # as data, for CI systems: --junitxml shows them as <property> of the test case
        self.user_properties.extend([
            ("model", self.state.run.name), ("method", self.method), ("check", self.check),
            ("measured", outcome.measured), ("baseline", outcome.baseline),
            ("tolerance", outcome.tolerance), ("verdict", "pass" if outcome.passed else "regression"),
        ])
        if not outcome.passed:
            raise PruneFailure(f"{self.nodeid}\n  {outcome.explain()}\n  {source}")

    def _write_baseline(self, store: BaselineStore, result: MethodResult, settings: dict) -> None:
        key = f"{result.model}::{self.method}"
        if key not in self.state.written:
            previous = store.load_if_valid(result.model, self.method)
            gated = set(model_checks(self.state))
            measured = {k: v for k, v in result.checks().items() if k in gated}
            checks = new_baselines(measured, previous.checks if previous else None)
            path = store.save(Baseline(result.model, self.method, settings, checks, result.provenance))
            self.state.written.append(key)
            self.state.notes.append(f"baseline written: {path}")
        self.state.record(self.method, self.check, "written")
        entry = store.load(result.model, self.method).checks.get(self.check)  # as written, tolerance too
        if entry is not None:
            self.state.describe(self.method, self.check, measured=entry.value, baseline=entry.value,
                                tolerance=entry.tolerance, changed="baseline written by this run")

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (PruneFailure, PruneError)):
            self.state.record(self.method, self.check, "failed")
            kind = "" if isinstance(excinfo.value, PruneFailure) else f"{type(excinfo.value).__name__}: "
            self._describe_failure(f"{kind}{excinfo.value}")
            return f"{kind}{excinfo.value}"
        self.state.record(self.method, self.check, "error")
        self._describe_failure(f"{type(excinfo.value).__name__}: {excinfo.value}")
        return super().repr_failure(excinfo, style=style)

    def _describe_failure(self, text: str) -> None:
        """The verdict table's message for a failure that :meth:`_judge` did not explain already
        (its own message, the check's verdict line, is the one a reviewer wants)."""
        if "message" not in self.state.verdicts.get(self.method, {}).get(self.check, {}):
            lines = text.splitlines()
            shown = lines[1:] if lines and lines[0] == self.nodeid else lines  # the row names the gate
            self.state.describe(self.method, self.check, message=" ".join(line.strip() for line in shown))

    def reportinfo(self):
        return self.path, None, f"prune gate {self.nodeid}"
