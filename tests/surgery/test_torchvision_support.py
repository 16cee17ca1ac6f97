"""The torchvision support table (docs/results.md) is what the surgery does: every classification model of
``torchvision.models.list_models`` is checked again (``benchmarks/torchvision_support.py``: random
weights and BatchNorm statistics, a random 30 % plan, pruned == masked dense, predicted sizes) and
must give its documented row, cell for cell. A change of surgery that changes a row fails here until
the table is regenerated; a bug (a pruned model that is not the masked one, an exception other
than our TraceError/PruneError) fails whatever the table says.

The project deselects no slow test by default (``python -m pytest``, what ``.ci/run`` and tox run,
selects every test, ``slow`` ones included), and the 79 checks that finish take 10-11 minutes on
the 2-core machine. So only the models in ``CHEAP`` run by default (under a minute together); the
others are marked ``slow`` and skipped unless asked for with ``-m slow``.

    python -m pytest tests/surgery/test_torchvision_support.py            # the cheap models
    python -m pytest tests/surgery/test_torchvision_support.py -m slow    # the rest
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest
import torchvision

_BENCHMARK = Path(__file__).resolve().parents[2] / "benchmarks" / "torchvision_support.py"
_spec = importlib.util.spec_from_file_location("torchvision_support", _BENCHMARK)
support = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = support  # dataclasses look their module up there
_spec.loader.exec_module(support)  # by path: benchmarks/ is no package, and its names stay off sys.path

MODELS = torchvision.models.list_models(module=torchvision.models)

# The models checked in the default run: one of each refusal (swin has two) and of each family
# that has a model under 4 s, ~41 s together. Seconds per model, one thread, the larger of two runs of
# `python benchmarks/torchvision_support.py` on the project's 2-core machine. Every other model
# (2.3 to 62 s each, 11 minutes together under `-m slow`) is slow.
CHEAP = {
    "squeezenet1_1": 0.8, "squeezenet1_0": 0.9, "shufflenet_v2_x0_5": 1.0, "resnet18": 1.2,
    "shufflenet_v2_x1_0": 1.4, "mobilenet_v3_small": 1.6, "regnet_y_400mf": 1.9, "resnet34": 2.0,
    "swin_v2_t": 2.0, "swin_t": 2.1, "swin_s": 2.2, "regnet_x_400mf": 2.3, "mnasnet0_5": 2.4,
    "googlenet": 2.4, "efficientnet_b0": 2.5, "mobilenet_v2": 2.7, "convnext_tiny": 3.6,
    "vit_b_32": 3.6, "resnext50_32x4d": 4.0,
}

# Not refusals but bugs of the surgery, for pytest_prune/surgery/ to fix (none at present; maxvit_t,
# whose dependency walk never settled, is now refused by surgery/walk_guard.py).
BUGS: dict[str, pytest.MarkDecorator] = {}


def _model(name: str):
    marks = [] if name in CHEAP else [pytest.mark.slow]
    if name in BUGS:
        marks.append(BUGS[name])
    return pytest.param(name, marks=marks, id=name)


def _asked_for_slow(config: pytest.Config) -> bool:
    """Whether ``-m`` selects slow tests by name (``-m slow``, ``-m "slow and not x"``)."""
    return re.search(r"(?<!not )\bslow\b", config.option.markexpr or "") is not None


def _documented_rows() -> dict[str, list[str]]:
    return support.documented_rows(support.SUPPORT_DOC.read_text())


def test_the_table_lists_exactly_the_models_of_torchvision():
    listed = _documented_rows()
    assert listed, f"{support.SUPPORT_DOC} has no torchvision support table; write it with `{support.COMMAND}`"
    stale = sorted(set(listed) - set(MODELS))
    missing = sorted(set(MODELS) - set(listed))
    assert not stale and not missing, (
        f"the support table lists {stale} (not in torchvision {torchvision.__version__}) and lacks "
        f"{missing}; regenerate it with `{support.COMMAND}`"
    )


@pytest.mark.parametrize("name", [_model(name) for name in MODELS])
def test_the_documented_row_is_what_the_surgery_does(name, request):
    if name not in CHEAP and not _asked_for_slow(request.config):
        pytest.skip("slow: run with -m slow")
    expected = _documented_rows().get(name)
    if expected is None:
        pytest.fail(f"{name} is not in the torchvision support table ({support.SUPPORT_DOC}); regenerate it with "
                    f"`{support.COMMAND}`")
    got = support.support_row(name).cells()
    differ = [f"{h}: documented {e!r}, now {g!r}" for h, e, g in zip(support.HEADER, expected, got) if e != g]
    assert got == expected, (
        f"{name}: the surgery no longer gives the documented row ({'; '.join(differ)}); if the change "
        f"is intended, regenerate the table with `{support.COMMAND}`"
    )
