"""``--prune-device``: a device this machine lacks is a usage error that names the option and the
devices there are, before any model is loaded."""

import pytest
import torch

from pytest_prune.devices import available_devices


@pytest.mark.parametrize(
    "device, why",
    [
        ("gpu0", "is not a torch device"),
        ("meta", "computes on cpu or cuda only"),
        pytest.param("cuda", "CUDA is not available here",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
        pytest.param("cuda:64", "there is no CUDA device 64",
                     marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
def test_a_device_this_machine_lacks_is_a_usage_error_naming_the_option(pytester, device, why):
    result = pytester.runpytest("--prune-model=lenet5", f"--prune-device={device}", "-p", "no:randomly")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pytest-prune: --prune-device {device!r}*{why}*"])
    result.stderr.fnmatch_lines([f"*use one of {', '.join(available_devices())}*"])
    assert "Traceback" not in result.stderr.str()


def test_the_fixtures_fail_cleanly_on_an_unknown_device(pytester):
    pytester.makepyfile("def test_model(prune_model):\n    pass\n")
    result = pytester.runpytest("--prune-device=gpu0", "-p", "no:randomly")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*pytest-prune: --prune-device 'gpu0' is not a torch device*"])


def test_auto_and_cpu_are_accepted(pytester):
    """``auto`` is the CPU here (CUDA where present); the plugin reaches collection."""
    for device in ("cpu", "auto"):
        result = pytester.runpytest("--prune-model=lenet5", f"--prune-device={device}", "--collect-only", "-q",
                                    "-p", "no:randomly")
        assert result.ret == pytest.ExitCode.OK, result.stderr.str()
