"""Fixtures for users who write their own pruning tests.

* ``prune_run`` (session): the :class:`~pytest_prune.pipeline.run.PruneRun` of ``--prune-model`` (or of the
  ``prune_model`` ini key; ``lenet5`` when neither is set), shared with the gate items;
* ``prune_model``: a fresh copy of the dense model, in eval mode;
* ``prune_data``: its :class:`~pytest_prune.data.bundle.DataBundle`;
* ``prune_pruned``: a factory ``prune_pruned(criterion, ratio, recovery='none') -> MethodResult``,
  cached per session (``ratio`` may be a budget such as ``'macs:0.5'``);
* ``prune_result``: the result for the test's ``@pytest.mark.prune(criterion=..., ratio=...)``.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Callable

import pytest

from ..errors import PruneError
from . import options
from .session import GATE_STATE

if TYPE_CHECKING:  # imported by the plugin in every pytest run: torch only when a fixture runs
    from ..pipeline.results import MethodResult
    from ..pipeline.run import PruneRun

_OWN_RUN = pytest.StashKey["PruneRun"]()


def _fail(exc: PruneError):
    pytest.fail(f"pytest-prune: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def prune_run(pytestconfig: pytest.Config) -> PruneRun:
    state = pytestconfig.stash.get(GATE_STATE, None)
    if state is not None:
        return state.run
    if _OWN_RUN not in pytestconfig.stash:
        try:
            settings = options.run_settings(
                pytestconfig, options.get(pytestconfig, "prune-model") or "lenet5"
            )
        except PruneError as exc:
            _fail(exc)
        from ..pipeline.run import PruneRun

        pytestconfig.stash[_OWN_RUN] = PruneRun(settings)
    return pytestconfig.stash[_OWN_RUN]


@pytest.fixture
def prune_model(prune_run: PruneRun):
    try:
        return copy.deepcopy(prune_run.info.model).eval()
    except PruneError as exc:
        _fail(exc)


@pytest.fixture
def prune_data(prune_run: PruneRun):
    try:
        return prune_run.data
    except PruneError as exc:
        _fail(exc)


@pytest.fixture
def prune_pruned(prune_run: PruneRun) -> Callable[[str, float], MethodResult]:
    def pruned(criterion: str = "l1", ratio: float | str = 0.5, recovery: str = "none") -> MethodResult:
        try:
            return prune_run.method(criterion, ratio, recovery)
        except PruneError as exc:
            _fail(exc)

    return pruned


@pytest.fixture
def prune_result(request: pytest.FixtureRequest, prune_pruned) -> MethodResult:
    marker = request.node.get_closest_marker("prune")
    kwargs = dict(marker.kwargs) if marker else {}
    ratio = kwargs.get("ratio", 0.5)
    return prune_pruned(kwargs.get("criterion", "l1"), ratio, kwargs.get("recovery", "none"))
