"""The committed baselines hold: what `pytest --prune-model=lenet5 ...` checks in the README."""

from pathlib import Path

import pytest

BASELINES = Path(__file__).resolve().parents[1] / "baselines"


@pytest.mark.parametrize(
    "args, items",
    [
        # the README's default command: l1 and random at the three default ratios, 6 checks each
        ([], 36),
        # recovery is part of the method: each recovery has its own baseline
        (["--prune-criteria=l1", "--prune-ratios=0.5", "--prune-recovery=none,bn,lsq"], 18),
        # the statistics + Tucker methods of Gong et al. run once each
        (["--prune-criteria=tucker-vbmf,meanvar+tucker"], 4 + 6),
        # the error-model criteria: predicted (data-free) and measured
        (["--prune-criteria=bn-error,recal-error"], 36),
    ],
    ids=["default", "recovery", "statistics-tucker", "error-models"],
)
def test_lenet5_gates_pass_against_committed_baselines(pytester, args, items):
    result = pytester.runpytest("--prune-model=lenet5", f"--prune-baselines={BASELINES}",
                                "-p", "no:randomly", *args)
    result.assert_outcomes(passed=items)
    assert "pytest-prune summary" in result.stdout.str()
