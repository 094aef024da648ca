"""W&B tracking, offline: what a tiny inversion logs, read back from the .wandb file."""

import json
import logging

import pytest

from pii.errors import ConfigError
from pii.run import runner, tracking
from tests.tiny import tiny_cfg
from tests.wandb_file import finished_records as records
from tests.wandb_file import history, run_file, run_record


def test_offline_run_logs_loss_probabilities_images_and_results(tmp_path):
    cfg = tiny_cfg(tmp_path, "logger=wandb", "log_every=2", "logger.run_name=tiny")
    result = runner.run(cfg)

    path = run_file(tmp_path)  # inside the job's output dir
    rows = history(path)
    losses = [r["loss"] for r in rows if "loss" in r]
    # every 2nd step and each stage's last: steps 0, 2 of each 3-step stage
    assert len(losses) == 6 and all(l > 0 for l in losses)
    for key in ("1_class-1", "2_class-2"):
        probs = [r[f"p_target/{key}"] for r in rows if f"p_target/{key}" in r]
        assert len(probs) == 6 and all(0 < p < 1 for p in probs)
        stage_images = [r for r in rows if r.get(f"image/{key}/_type") == "image-file"]
        assert [r[f"image/{key}/width"] for r in stage_images] == list(result.stage_sizes)
        assert any(r.get(f"final/{key}/_type") == "image-file" for r in rows)
        image_file = path.parent / "files" / stage_images[-1][f"image/{key}/path"]
        assert image_file.stat().st_size > 0
    table = next(r for r in rows if "results/_type" in r)
    assert table["results/_type"] == "table-file" and table["results/nrows"] == 2

    run = run_record(path)
    assert run.display_name == "tiny" and run.project == "pii"
    config = {u.key: json.loads(u.value_json) for u in run.config.update}  # the resolved config
    assert config["class_id"] == [1, 2] and config["loss"]["tv_weight"] == 0.0
    summary = [item for r in records(path) if r.WhichOneof("record_type") == "summary" for item in r.summary.update]
    assert any(item.key == "mean_probability" for item in summary)
    (exit_record,) = [r.exit for r in records(path) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 0


JUDGE = ["verifier=timm", "verifier.timm.name=test_efficientnet", "verifier.timm.weights=random",
         "verifier.timm.num_classes=10", "verifier.timm.input_size=32"]


def summary_of(path) -> dict:
    items = [item for r in records(path) if r.WhichOneof("record_type") == "summary" for item in r.summary.update]
    return {(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in items}


def test_the_judged_numbers_reach_the_summary_the_table_and_the_sweep_objective(tmp_path):
    from pii.run.cli import sweep_metric

    cfg = tiny_cfg(tmp_path, "logger=wandb", *JUDGE)
    result = runner.run(cfg)
    path = run_file(tmp_path)
    summary = summary_of(path)
    judged = result.judge["timm"]
    for key in ("top1", "top5", "mean_probability"):
        assert summary[f"judge/timm/{key}"] == pytest.approx(getattr(judged, key))
    table = next(r for r in history(path) if "results/_type" in r)
    table_file = json.loads((path.parent / "files" / table["results/path"]).read_text())
    assert "timm/top1" in table_file["columns"] and "timm/prediction" in table_file["columns"]
    column = table_file["columns"].index("timm/probability")
    assert [row[column] for row in table_file["data"]] == pytest.approx([c.probability for c in judged.classes])
    assert sweep_metric(result, cfg.sweep_metric) == judged.top1  # what a Hydra sweeper optimises
    (images,) = [r.artifact for r in records(path) if r.WhichOneof("record_type") == "artifact"
                 and r.artifact.type == "inversions"]
    assert {e.path for e in images.manifest.contents} >= {"1_class-1.png", "2_class-2.png", "metrics.json"}


def test_failed_job_finishes_the_run_with_exit_code_1(tmp_path):
    cfg = tiny_cfg(tmp_path, "logger=wandb")
    with pytest.raises(RuntimeError, match="boom"):
        with tracking.start(cfg, [1, 2], 10, []):
            raise RuntimeError("boom")
    (exit_record,) = [r.exit for r in records(run_file(tmp_path)) if r.WhichOneof("record_type") == "exit"]
    assert exit_record.exit_code == 1


def test_mode_env_wins_and_online_without_key_goes_offline_with_one_line(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode("online") == "disabled"
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with caplog.at_level(logging.WARNING, logger="pii.run.tracking"):
        assert tracking.resolve_mode("online") == "offline"
    assert len(caplog.records) == 1 and "wandb sync" in caplog.records[0].message
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert tracking.resolve_mode("online") == "online"
    with pytest.raises(ConfigError, match="logger.mode"):
        tracking.resolve_mode("sometimes")


class RecordingTracker(tracking.Tracker):
    """A tracker added by a class and a `logger._target_`, no code of pii's changed."""

    made: list["RecordingTracker"] = []

    def __init__(self, config, out_dir, **rest):
        self.out_dir, self.steps, self.stages, self.exit_code = out_dir, [], [], None
        RecordingTracker.made.append(self)

    def step_done(self, index, step, loss, probs):
        self.steps.append((index, step))

    def stage_done(self, index, stage, image):
        self.stages.append(stage.size)

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def test_the_logger_groups_target_is_the_tracker_and_a_new_one_needs_no_dispatch(tmp_path):
    RecordingTracker.made.clear()
    result = runner.run(tiny_cfg(tmp_path, f"logger._target_={__name__}.RecordingTracker"))
    (tracker,) = RecordingTracker.made
    assert tracker.out_dir == tmp_path and tracker.exit_code == 0
    assert tracker.stages == list(result.stage_sizes) and (0, 0) in tracker.steps
    assert not (tmp_path / "wandb").exists()  # logger=none and this one: no W&B run
    assert type(tracking.builder(tiny_cfg(tmp_path).logger)(config=None, out_dir=tmp_path)) is tracking.Tracker


@pytest.mark.parametrize("target,message", [
    ("pii.run.tracking.NoSuchTracker", "logger._target_='pii.run.tracking.NoSuchTracker' cannot be loaded"),
    ("", "logger has no _target_"),
])
def test_a_tracker_that_cannot_be_built_is_one_config_error_before_the_run(tmp_path, target, message):
    from pii.run.cli import check_invert_job

    cfg = tiny_cfg(tmp_path / "run", f"logger._target_={target}")
    with pytest.raises(ConfigError, match=message):
        check_invert_job(cfg, [])
    with pytest.raises(ConfigError, match=r"use logger=<none\|wandb>"):
        runner.run(cfg)
    assert not (tmp_path / "run").exists()


def test_a_run_saved_when_logger_backend_named_the_tracker_resumes_with_that_tracker(tmp_path):
    from omegaconf import OmegaConf

    from pii.run.resume import with_new_keys

    saved = OmegaConf.to_container(tiny_cfg(tmp_path, "logger=wandb"), resolve=True)
    del saved["logger"]["_target_"]
    saved["logger"]["backend"] = "wandb"
    resumed = with_new_keys(OmegaConf.create(saved), tiny_cfg(tmp_path))  # the default now: logger=none
    assert resumed.logger._target_ == "pii.run.tracking.WandbTracker" and "backend" not in resumed.logger
