import json

import pytest

from pytest_prune.gating.baselines import Baseline, BaselineStore, CheckBaseline, settings_mismatch
from pytest_prune.errors import BaselineError


def _baseline():
    return Baseline(
        "lenet5",
        "l1-0.5",
        {"data": "digits", "seed": 0},
        {"accuracy_drop": CheckBaseline(0.0125, 0.01), "macs_reduction": CheckBaseline(0.7, 1e-9)},
    )


def test_round_trip_is_exact_and_readable(tmp_path):
    store = BaselineStore(tmp_path)
    path = store.save(_baseline())
    assert path == tmp_path / "lenet5" / "l1-0.5.json"
    loaded = store.load("lenet5", "l1-0.5")
    assert loaded == _baseline()
    text = path.read_text()
    # one value per line, sorted: a review diff shows exactly which number moved
    assert text.splitlines()[1].strip().startswith('"checks"')
    assert '"value": 0.0125' in text
    assert store.methods("lenet5") == ["l1-0.5"]


def test_save_leaves_no_temporary_files(tmp_path):
    store = BaselineStore(tmp_path)
    store.save(_baseline())
    store.save(_baseline())
    assert [p.name for p in (tmp_path / "lenet5").iterdir()] == ["l1-0.5.json"]


def test_missing_baseline_names_the_command_that_writes_it(tmp_path):
    with pytest.raises(BaselineError, match="--prune-update-baselines") as info:
        BaselineStore(tmp_path).load("lenet5", "l1-0.5")
    assert "l1-0.5.json" in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "cannot be read"),
        (json.dumps({"format": 1, "model": "lenet5"}), "malformed"),
        (json.dumps({"format": 99, "model": "m", "method": "x", "checks": {}}), "format 99"),
        (json.dumps({"format": 1, "model": "m", "method": "x",
                     "checks": {"accuracy_drop": {"value": "high", "tolerance": 0}}}), "malformed"),
    ],
)
def test_corrupt_baseline_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "lenet5" / "l1-0.5.json"
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(BaselineError, match=message):
        BaselineStore(tmp_path).load("lenet5", "l1-0.5")
    assert path.read_text() == content  # nothing is lost


def test_settings_mismatch_lists_each_difference():
    diff = settings_mismatch({"data": "digits", "seed": 0}, {"data": "digits", "seed": 1, "x": 2})
    assert diff == ["seed: baseline 0, this run 1", "x: baseline None, this run 2"]
    assert settings_mismatch({"a": 1}, {"a": 1}) == []
