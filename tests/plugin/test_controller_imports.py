"""A pytest-xdist controller measures nothing, so it must not import torch before it starts its
workers: the option checks it runs answer the built-in names from torch-free tuples."""

import pytest

from pytest_prune import method_names
from pytest_prune.errors import SpecError
from pytest_prune.measure.colour import COLOUR_SELECTIVE_THRESHOLD
from pytest_prune.pipeline.methods import get_method, known_methods
from pytest_prune.pipeline.settings import RunSettings
from pytest_prune.recovery import parse_recovery
from pytest_prune.recovery.registry import _STEPS


def test_the_torch_free_names_are_the_registries():
    assert set(method_names.BUILTIN_METHODS) == set(known_methods())
    assert set(method_names.RATIO_FREE_METHODS) == {m for m in known_methods() if get_method(m).ratio_free}
    plain = {name for name, cls in _STEPS.classes().items() if _plain_step(cls)}
    assert set(method_names.PLAIN_RECOVERY_STEPS) == plain


def _plain_step(cls) -> bool:
    try:
        return cls.from_argument(None).spec == cls.name
    except SpecError:  # a step that needs an argument (finetune:N)
        return False


def test_the_settings_colour_threshold_is_the_measurement_s():
    assert RunSettings(model="lenet5").colour_threshold == COLOUR_SELECTIVE_THRESHOLD


@pytest.mark.parametrize("spec", ["none", "lsq", " LSQ + bn ", "bn+lsq", "finetune:1", "lsq+finetune:2"])
def test_recovery_names_are_the_parser_s(spec):
    assert method_names.recovery_name(spec) == parse_recovery(spec).name


@pytest.mark.parametrize("spec", ["none+lsq", "lsq++bn", "lsqq"])
def test_a_bad_recovery_spec_gets_the_parser_s_error(spec):
    with pytest.raises(SpecError) as expected:
        parse_recovery(spec)
    with pytest.raises(SpecError) as got:
        method_names.recovery_name(spec)
    assert str(got.value) == str(expected.value)


def test_a_user_registered_criterion_is_checked_by_the_registry():
    with pytest.raises(SpecError, match="unknown pruning criterion 'l1x'"):
        method_names.check_method("l1x")
    assert method_names.check_method(" l1 ") == "l1"


PROBE = '''
import sys
import pytest

@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    # before pytest-xdist starts the workers (its own sessionstart is trylast)
    from pytest_prune.plugin.session import GATE_STATE
    state = session.config.stash[GATE_STATE]
    print(f"probe: torch={'torch' in sys.modules} run={state.run} criteria={state.options.criteria}")
    pytest.exit("probe done", returncode=0)
'''


def test_the_xdist_controller_starts_its_workers_without_importing_torch(pytester):
    pytester.makepyfile(probe=PROBE)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess(
        "-p", "probe", "--prune-model=lenet5", "--prune-criteria=l1,car,tucker-vbmf",
        "--prune-ratios=0.3,macs:0.5", "--prune-recovery=none,lsq+bn", "-n", "2", "-p", "no:cacheprovider",
    )
    result.stdout.fnmatch_lines(["probe: torch=False run=None criteria=['l1', 'car', 'tucker-vbmf']"])
