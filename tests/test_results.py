"""One results schema: pii.eval.results writes and reads metrics.json; a real run's file reads back."""

import json
from pathlib import Path

import pytest

from pii.errors import ConfigError
from pii.eval import results
from pii.eval.results import METRICS, SCHEMA_VERSION
from pii.run import runner
from tests.tiny import made_up_result, tiny_cfg

OLD_FILE = Path(__file__).resolve().parent / "data" / "metrics_unversioned.json"  # a GPU run of an earlier pii
JUDGE = ["verifier=timm", "verifier.timm.name=test_efficientnet", "verifier.timm.weights=random",
         "verifier.timm.num_classes=10", "verifier.timm.input_size=32"]


@pytest.mark.parametrize("judged", [True, False])
def test_write_then_read_gives_the_same_result(tmp_path, judged):
    result = made_up_result({1: "1_a.png", 2: "2_b.png"}, judged=judged)
    results.write(tmp_path / METRICS, result)
    assert results.read(tmp_path / METRICS) == result
    written = json.loads((tmp_path / METRICS).read_text())
    assert list(written)[0] == "schema_version" and written["schema_version"] == SCHEMA_VERSION
    assert written["config"]["resume"] is None  # None inside the config stays; a None field is left out
    if judged:  # a verdict's image is judge.json's
        assert "image" not in written["judge"]["lite"]["classes"][0]
    else:  # verifier=none: judged, by no judge
        assert written["judge"] == {}


def test_a_run_not_judged_yet_has_no_judge_key(tmp_path):
    result = made_up_result({1: "1_a.png"})
    result.judge = None
    results.write(tmp_path / METRICS, result)
    assert "judge" not in json.loads((tmp_path / METRICS).read_text())
    assert results.read(tmp_path / METRICS).judge is None


def test_a_real_run_writes_its_version_and_reads_back(tmp_path):
    result = runner.run(tiny_cfg(tmp_path, "schedule.stages=2", "schedule.steps=2", *JUDGE))
    written = json.loads((tmp_path / METRICS).read_text())
    assert list(written) == ["schema_version", "model", "device", "seconds", "seconds_per_class", "steps",
                             "stage_sizes", "ensemble_size", "param", "spectral_slope", "mean_probability",
                             "top1_rate", "classes", "config", "first_stage", "stage_seconds", "judge", "device_settings"]
    assert list(written["classes"][0]) == ["class_id", "name", "probability", "top1", "top5_classes",
                                           "start_probability", "image", "spectral_slope"]
    assert list(written["judge"]["timm"]["classes"][0]) == ["class_id", "name", "probability", "top1", "top5",
                                                            "prediction", "prediction_name", "spectral_slope"]
    assert results.read(tmp_path / METRICS) == result
    assert result.method == "pixel" and result.seed == 0 and len(result.classes[0].top5_classes) == 5


def test_a_file_of_a_newer_version_is_one_line_config_error(tmp_path):
    results.write(tmp_path / METRICS, made_up_result({1: "1_a.png"}))
    data = json.loads((tmp_path / METRICS).read_text())
    (tmp_path / METRICS).write_text(json.dumps({**data, "schema_version": SCHEMA_VERSION + 1}))
    with pytest.raises(ConfigError, match=f"schema_version {SCHEMA_VERSION + 1}.*update pii") as err:
        results.read(tmp_path / METRICS, "init_from")
    assert "\n" not in str(err.value) and str(err.value).startswith("init_from=")


def test_other_json_and_damaged_files_are_config_errors(tmp_path):
    path = tmp_path / METRICS
    path.write_text(json.dumps({"eval": {}, "seconds": 1.0, "steps": 2}))  # train_invert.py's metrics.json
    with pytest.raises(ConfigError, match="not the metrics.json of an invert.py run"):
        results.read(path)
    path.write_text(json.dumps({"classes": [{"class_id": 1}], "config": {}, "schema_version": 1}))
    with pytest.raises(ConfigError, match="is damaged"):
        results.read(path)
    with pytest.raises(ConfigError, match="no metrics.json there"):
        results.read(tmp_path / "nowhere" / METRICS)


def test_a_file_from_before_the_version_still_reads():
    """A run of an earlier pii (no schema_version; a class's top classes under `top5`, no param)."""
    assert "schema_version" not in json.loads(OLD_FILE.read_text())
    old = results.read(OLD_FILE)
    assert len(old.classes[0].top5_classes) == 5 and old.classes[0].top5_classes[0].name
    assert old.param == "pixel" and old.spectral_slope is None
    assert old.judge["efficientnet_lite2"].classes[0].top5 in (True, False)
