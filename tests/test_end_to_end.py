"""`invert.py` on the embedded Lite0 with a tiny budget, as a user runs it."""

import json

from conftest import run_cli


def test_invert_cli_raises_the_target_probability_and_writes_every_output(tmp_path):
    out = tmp_path / "run"
    result = run_cli("invert.py", "class_id=[980,1]", "schedule.stages=4", "schedule.steps=30",
                     "augmentation.ensemble.size=2", "device=cpu", f"hydra.run.dir={out}", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["schema_version"] == 1
    assert metrics["steps"] == 4 * 30 and metrics["stage_sizes"] == [90, 134, 179, 224]
    timed = metrics["stage_seconds"]  # where a run's time goes, stage by stage
    assert [t["size"] for t in timed] == [90, 134, 179, 224]
    assert all(0 < t["first_step_seconds"] < t["seconds"] for t in timed)
    assert sum(t["seconds"] for t in timed) <= metrics["seconds"]
    by_class = {c["class_id"]: c for c in metrics["classes"]}
    assert set(by_class) == {980, 1} and by_class[980]["name"] == "volcano"
    for entry in by_class.values():
        assert entry["probability"] > 20 * entry["start_probability"], entry
        top = entry["top5_classes"]  # the model's top classes; a judge's verdict has top5: a bool
        assert len(top) == 5 and top[0]["probability"] >= top[-1]["probability"]
    assert by_class[980]["probability"] > 0.2

    expected = ["980_volcano.png", "1_goldfish.png", "grid.png", "metrics.json", "checkpoint.pt",
                *[f"stages/stage{i}_{s}px.png" for i, s in enumerate([90, 134, 179, 224], 1)]]
    missing = [name for name in expected if not (out / name).is_file()]
    assert not missing
    from PIL import Image

    assert Image.open(out / "980_volcano.png").size == (224, 224)  # the model's full resolution
    assert "volcano" in result.stderr + result.stdout  # the summary line per class
