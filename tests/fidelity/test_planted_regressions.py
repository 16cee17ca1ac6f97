"""Fidelity: baselines written in the test, then planted regressions, each of which must fail with a
message naming its cause; unchanged reruns must pass.

Each planted fault reaches the plugin the way a real one would: damaged weights under the same file
name, a data module that now returns other labels, and (through a ``conftest.py`` in the test
project, undone at the end of its run) a criterion whose scores are negated, a surgery whose output
is nudged, and a plan that removes one more channel per group.
"""

import json
import textwrap

import pytest
import torch

from pytest_prune.models import build_model

GATES = ["--prune-model=lenet5", "--prune-criteria=l1", "--prune-ratios=0.5", "-p", "no:randomly"]
DATA_MODULE = """
    import torch
    from pytest_prune.data import load_data

    def data():
        bundle = load_data("digits")
        x = torch.stack([bundle.evaluation[i][0] for i in range(len(bundle.evaluation))])
        y = torch.tensor([int(bundle.evaluation[i][1]) for i in range(len(bundle.evaluation))])
        {change}
        return {{"train": (x, y), "eval": (x, y)}}
"""


def _gates(pytester, *args):
    return pytester.runpytest(*GATES, f"--prune-baselines={pytester.path / 'bl'}", *args)


def _baselines_then(pytester, *args):
    """Write the baselines, check an unchanged rerun passes, and return the arguments used."""
    _gates(pytester, *args, "--prune-update-baselines").assert_outcomes(passed=7)
    _gates(pytester, *args).assert_outcomes(passed=7)
    return args


def _plant(pytester, module: str, attribute: str, replacement: str, prelude: str = "") -> None:
    """A conftest that sets ``module.attribute = replacement`` (an expression that may use
    ``original``, and names from ``prelude``) for one run, and restores it at the run's end."""
    pytester.makeconftest(textwrap.dedent(prelude) + textwrap.dedent(f"""
        import {module} as target
        original = target.{attribute}

        def pytest_configure(config):
            target.{attribute} = {replacement}

        def pytest_unconfigure(config):
            target.{attribute} = original
    """))


def _planted_run(pytester, module: str, attribute: str, replacement: str, prelude: str = ""):
    """Baselines first (and an unchanged rerun), then one run with the fault planted."""
    args = _baselines_then(pytester)
    _plant(pytester, module, attribute, replacement, prelude)
    return _gates(pytester, *args)


def test_dense_weights_damaged_under_the_same_file_name(pytester):
    weights = pytester.path / "release" / "w.pth"
    weights.parent.mkdir()
    model = build_model("lenet5").model
    torch.save(model.state_dict(), weights)
    args = _baselines_then(pytester, f"--prune-weights={weights}")
    state = model.state_dict()
    noise = torch.Generator().manual_seed(0)
    for name in ("features.0.weight", "features.3.weight"):  # as a bad retraining would leave them
        state[name] = state[name] + 1.5 * state[name].std() * torch.randn(state[name].shape, generator=noise)
    torch.save(state, weights)
    result = _gates(pytester, *args)
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed", 0) >= 1, out
    assert "changed since the baseline: the dense model (state-dict digest" in out
    assert "weights w.pth → w.pth" in out  # same name, other contents
    assert "compared against baselines of the old one" in out  # shown in the summary too


def test_same_data_spec_returning_changed_labels(pytester):
    pytester.makepyfile(mydata=textwrap.dedent(DATA_MODULE.format(change="pass")))
    pytester.syspathinsert()
    args = _baselines_then(pytester, "--prune-data=mydata:data")
    pytester.makepyfile(mydata=textwrap.dedent(DATA_MODULE.format(change="y = y.roll(1)")))
    result = _gates(pytester, *args)
    result.assert_outcomes(failed=7)
    out = result.stdout.str()
    assert "data spec 'mydata:data' now gives other data (evaluation digest" in out
    assert "measured under other settings" in out


def test_same_data_spec_with_other_last_bits_still_passes(pytester):
    """What another CPU's ``torch.randn`` or normalisation leaves: a third of the values one ulp
    away. Not a change of the data: the gates pass, and a real change (one image of 359 replaced)
    is still refused."""
    pytester.makepyfile(mydata=textwrap.dedent(DATA_MODULE.format(change="pass")))
    pytester.syspathinsert()
    args = _baselines_then(pytester, "--prune-data=mydata:data")
    last_bits = ("x = torch.where((torch.arange(x.numel()) % 3 == 0).reshape(x.shape), "
                 "torch.nextafter(x, torch.full_like(x, 1e9)), x)")
    pytester.makepyfile(mydata=textwrap.dedent(DATA_MODULE.format(change=last_bits)))
    result = _gates(pytester, *args)
    result.assert_outcomes(passed=7)
    pytester.makepyfile(mydata=textwrap.dedent(DATA_MODULE.format(change="x[5] = x[6]")))
    result = _gates(pytester, *args)
    result.assert_outcomes(failed=7)
    assert "now gives other data (evaluation digest" in result.stdout.str()


def test_criterion_whose_scores_are_negated(pytester):
    result = _planted_run(pytester, "pytest_prune.criteria.magnitude", "L1Norm.scores",
                          "lambda self, ctx: {k: -v for k, v in original(self, ctx).items()}")
    out = result.stdout.str()
    assert result.parseoutcomes().get("failed", 0) >= 1, out
    assert "changed since the baseline: the plan (" in out and "channel(s) differ" in out
    assert "the dense model" not in out


def test_pruned_weights_nudged_after_surgery(pytester):
    result = _planted_run(pytester, "pytest_prune.pipeline.run", "prune_model", "nudged(original)", prelude="""
        import torch

        def nudged(surgery):
            def prune_model(*args, **kwargs):
                model = surgery(*args, **kwargs)
                with torch.no_grad():
                    model.classifier[5].bias += 1e-3
                return model
            return prune_model
    """)
    out = result.stdout.str()
    assert "lenet5::l1-0.5::surgery_equivalence" in out and "REGRESSION" in out
    assert "same dense model, data and plan, but other compressed weights" in out
    assert "the surgery or the recovery now computes something else" in out


def test_one_extra_channel_removed_per_group(pytester):
    result = _planted_run(pytester, "pytest_prune.plan", "removal_count",
                          "lambda size, ratio: min(size - 1, original(size, ratio) + 1)")
    out = result.stdout.str()
    # MACs and parameters are exact: more pruning than the baseline is a change, not a pass
    assert "lenet5::l1-0.5::macs_reduction" in out and "lenet5::l1-0.5::params_reduction" in out
    assert "FAIL (" in out and "macs_reduction" in out
    assert "features.0: 3 → 4 removed" in out
    assert "layer counts (" in out and "features.0: MACs 58800 → 39200, params 78 → 52" in out


def test_a_numerical_difference_alone_is_named_as_such(pytester):
    """Same dense model, data, plan and compressed weights, but a stricter stored value: the
    message says nothing recorded changed."""
    args = _baselines_then(pytester)
    path = pytester.path / "bl" / "lenet5" / "l1-0.5.json"
    data = json.loads(path.read_text())
    data["checks"]["attribution_retention"]["value"] += 0.2
    path.write_text(json.dumps(data))
    result = _gates(pytester, *args)
    result.assert_outcomes(passed=6, failed=1)
    out = result.stdout.str()
    assert "nothing recorded changed (same dense model, data, plan and compressed weights)" in out
    obtained = json.loads((pytester.path / "bl" / "lenet5" / "l1-0.5.obtained.json").read_text())
    assert obtained["checks"]["attribution_retention"]["value"] == pytest.approx(
        data["checks"]["attribution_retention"]["value"] - 0.2)
    assert (pytester.path / "bl" / ".gitignore").read_text().strip().endswith("*.obtained.json")
