"""The pytest plugin: options in, gate items and a summary out.

Thin by design: it turns options into a :class:`~pytest_prune.pipeline.run.PruneRun` and each measured
check into a test item compared with the stored baseline. Everything it measures comes from the
pipeline (:mod:`pytest_prune.pipeline`); this package (hooks here; options, items, fixtures,
session state and the terminal summary beside them) is the only code that knows pytest.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ..errors import PruneError
from . import options
from .fixtures import prune_data, prune_model, prune_pruned, prune_result, prune_run  # noqa: F401
from .session import GATE_STATE, GateState

# Installing the plugin must not make every pytest run import torch, Torch-Pruning, pandas...:
# the pipeline is imported in the hooks, once --prune-model asks for gates.


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "prune(criterion='l1', ratio=0.5, recovery='none'): the pruning the prune_result fixture "
        "returns for this test",
    )
    model = options.get(config, "prune-model")
    if model is None:
        return
    try:
        settings = options.run_settings(config, model)
        report = options.get(config, "prune-report")
        gate_options = options.GateOptions(
            model=model,
            criteria=options.split_list(options.get(config, "prune-criteria"), "prune-criteria"),
            ratios=options.parse_ratios(options.get(config, "prune-ratios")),
            recoveries=options.parse_recoveries(options.get(config, "prune-recovery")),
            baselines=options.baselines_dir(config),
            update=bool(options.get(config, "prune-update-baselines")),
            report=options.invocation_path(config, report) if report else None,
            min_speedup=options.parse_min_speedup(options.get(config, "prune-min-speedup")),
            candidates=options.candidate_paths(config),
        )
        from ..method_names import check_method  # torch-free for the built-in methods

        for name in gate_options.criteria:
            check_method(name)  # fail now, at configure time, on a misspelt criterion
    except PruneError as exc:
        raise pytest.UsageError(f"pytest-prune: {exc}") from None
    if _is_xdist_controller(config):
        # The workers measure; the controller only merges their rows. Building a run here would
        # import torch (3-4 s) before the workers are even started.
        config.stash[GATE_STATE] = GateState(None, gate_options, settings)
        return
    if _is_xdist_worker(config):  # n workers on the cores one process would have had
        from ..modes import share_cores

        share_cores(int(config.workerinput.get("workercount", 1)))
    from ..pipeline.run import PruneRun

    run = PruneRun(settings)
    run.progress = lambda message: _progress(config, message)
    run.recoveries = tuple(gate_options.recoveries)  # recon's scoring pass takes lsq's dense capture too
    config.stash[GATE_STATE] = GateState(run, gate_options, settings)


def _progress(config: pytest.Config, message: str) -> None:
    """Recovery (fine-tuning) progress goes to the terminal, one line per step or epoch."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"pytest-prune: {message}")


def _gate_state(config: pytest.Config) -> GateState | None:
    return config.stash.get(GATE_STATE, None)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config):
    # `pytest --prune-model=X` with no paths runs the gates alone, not the project's test suite;
    # name test paths explicitly to run both.
    if _gate_state(config) is not None and config.args_source != pytest.Config.ArgsSource.ARGS:
        return True
    return None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list) -> None:
    state = _gate_state(config)
    if state is None:
        return
    from .items import CandidateGates, ModelGates, unused_baselines
    from ..recovery import check_recoveries_apply

    try:
        state.listing_only = bool(config.option.collectonly)
        if not state.listing_only:  # listing the gates loads no data and traces nothing
            state.run.check_inputs()
            for line in state.run.trace_notes:
                state.note(f"{state.run.name}: {line}")
            check_recoveries_apply(state.run.info.model, state.options.recoveries)
        name = state.run.name
    except PruneError as exc:
        raise pytest.UsageError(f"pytest-prune: {exc}") from None
    # nodeid given explicitly: ids read `lenet5::l1-0.5::accuracy_drop`, with no file part
    collector = ModelGates.from_parent(session, name=name, nodeid=name, state=state)
    gates = list(collector.collect())
    if state.options.candidates:
        candidates = CandidateGates.from_parent(session, name="candidate", nodeid="candidate", state=state)
        gates.extend(candidates.collect())
    items.extend(gates)
    unused = unused_baselines(state.options.baselines, name, {item.method for item in gates})
    if unused:
        shown = ", ".join(unused if config.option.verbose > 0 else unused[:4])
        more = "" if config.option.verbose > 0 or len(unused) <= 4 else f", … ({len(unused) - 4} more; -v lists them)"
        state.note(
            f"{len(unused)} baseline file(s) of {name} in {state.options.baselines} are not produced by "
            f"these options (kept, never deleted; remove stale ones by hand): {shown}{more}"
        )


def _is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def _is_xdist_controller(config: pytest.Config) -> bool:
    """Whether this process hands the tests to pytest-xdist workers (``-n N``, ``--dist`` other
    than ``no``) and runs none itself; xdist lists the gates itself under ``--collect-only``."""
    if _is_xdist_worker(config) or config.getoption("collectonly"):
        return False
    return config.getoption("dist", "no") != "no" and bool(config.getoption("tx", None))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Under pytest-xdist, keep each pruning's checks on one worker, whatever --dist says: the
    scope is ``<model>::<criterion>-<ratio>``, so the checks of every recovery of one pruning
    (``l1-0.5``, ``l1-0.5+lsq``) share the one-shot model their worker pruned once. ``--dist each``
    (every test on every worker) is left as asked."""
    state = _gate_state(config)
    if state is None or config.getoption("dist", "load") in ("each", "no"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    recoveries = state.options.recoveries

    class OneShotScope(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return one_shot_scope(nodeid, recoveries)

    return OneShotScope(config, log)


def one_shot_scope(nodeid: str, recoveries: list[str]) -> str:
    """``lenet5::l1-0.5+lsq::top1`` → ``lenet5::l1-0.5``: the item's method without its recovery
    (one of ``recoveries``, as the method ids spell them), i.e. the pruning the run caches once."""
    method = nodeid.rsplit("::", 1)[0]
    suffixes = sorted((f"+{r}" for r in recoveries if r not in ("", "none")), key=len, reverse=True)
    return next((method[: -len(s)] for s in suffixes if method.endswith(s)), method)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:
    """On the controller: take in what a worker measured, for the one summary and report."""
    state = _gate_state(node.config)
    payload = getattr(node, "workeroutput", {}).get("pytest_prune")
    if state is not None and payload:
        state.merge(payload)
    if state is not None and state.options.report is not None and _REPORT_PRELOAD not in node.config.stash:
        # the first worker done frees a core while the others finish: import what the report
        # needs (pandas, matplotlib: 2-3 s) there, instead of after the last worker
        import threading

        from .report_preload import preload_report_modules

        node.config.stash[_REPORT_PRELOAD] = threading.Thread(target=preload_report_modules, daemon=True)
        node.config.stash[_REPORT_PRELOAD].start()


_REPORT_PRELOAD = pytest.StashKey["object"]()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    state = _gate_state(config)
    if state is None or _is_xdist_worker(config) or not state.rows():
        return
    from .summary import summary_lines

    terminalreporter.section("pytest-prune summary")
    for line in summary_lines(state):
        terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus) -> None:
    state = _gate_state(session.config)
    if state is None:
        return
    if _is_xdist_worker(session.config):  # the controller reports, once, for all workers
        payload = state.worker_payload()
        if state.options.report is not None and state.run.results():
            # the page's maps of this worker's methods, drawn here, where their models are
            from ..report import figures_payload, report_figures
            from ..sensitivity.files import sensitivity_rows

            figures = report_figures(state.run, state.run.results())
            if state.run.sensitivity_tables:
                figures["sensitivity"] = sensitivity_rows(state.run.sensitivity_tables, state.run.name)
            payload["figures"] = figures_payload(figures)
        session.config.workeroutput["pytest_prune"] = payload
        return
    if state.options.report is None or not state.rows():
        return
    from ..report import merged_figures, write_report
    from .summary import method_order, ordered_rows, verdict_rows

    remote = bool(state.remote_rows)
    written = write_report(
        state.run, state.options.report, ordered_rows(state) if remote else None, verdicts=verdict_rows(state),
        figures=merged_figures(state.remote_figures, lambda m: method_order(state, m)) if remote else None,
    )
    state.notes.append(f"report written: {', '.join(str(p) for p in written)}")

