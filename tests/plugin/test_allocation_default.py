"""Without --prune-allocation each criterion gates under its natural allocation, recorded in its
baseline; the option (or the ini key) overrides it for every criterion."""

import json

# the settings and the plan do not depend on the checks run: keep the runs cheap
FAST = ["--prune-model=lenet5", "--prune-criteria=cpmc,l1", "--prune-ratios=0.5", "-p", "no:randomly",
        "-k", "accuracy_drop or top1", "--prune-attribution=saliency"]


def _written(pytester, folder: str, *args) -> dict:
    result = pytester.runpytest(*FAST, f"--prune-baselines={pytester.path / folder}", "--prune-update-baselines", *args)
    result.assert_outcomes(passed=4)
    return {m: json.loads((pytester.path / folder / "lenet5" / f"{m}-0.5.json").read_text()) for m in ("cpmc", "l1")}


def test_baselines_record_each_criterions_natural_allocation_and_the_override(pytester):
    natural = _written(pytester, "natural")
    assert natural["cpmc"]["settings"]["allocation"] == "global"
    assert natural["l1"]["settings"]["allocation"] == "layerwise"

    given = _written(pytester, "given", "--prune-allocation=layerwise")
    assert given["cpmc"]["settings"]["allocation"] == "layerwise"
    assert given["cpmc"]["provenance"]["plan"]["digest"] != natural["cpmc"]["provenance"]["plan"]["digest"]
    assert given["l1"]["provenance"]["plan"] == natural["l1"]["provenance"]["plan"]

    # a baseline of the natural allocation refuses a run under another
    compared = pytester.runpytest(*FAST, f"--prune-baselines={pytester.path / 'natural'}",
                                  "--prune-allocation=layerwise")
    compared.assert_outcomes(passed=2, failed=2)  # l1 is layer-wise either way; cpmc is not
    out = compared.stdout.str()
    assert "measured under other settings" in out and "allocation" in out

    pytester.makeini("[pytest]\nprune_allocation = global\n")
    from_ini = _written(pytester, "ini")
    assert from_ini["l1"]["settings"]["allocation"] == "global"
    assert from_ini["cpmc"]["provenance"]["plan"] == natural["cpmc"]["provenance"]["plan"]


def test_help_says_what_the_default_is(pytester):
    out = pytester.runpytest("--help").stdout.str()
    assert "each criterion's own: global for cpmc" in " ".join(out.split())
