"""Resume: a run stopped after a stage continues there, and ends where an
uninterrupted run with the same seed ends."""

import json

import pytest
import torch
from conftest import ROOT, as_hydra_run, cli_env, compose_config, file_bytes, run_cli, stopped_after_stage
from omegaconf import OmegaConf

from pii.errors import ConfigError
from pii.run import outputs, resume, runner
from tests.tiny import tiny_cfg


def test_resume_continues_at_the_next_stage_and_matches_a_clean_run(tmp_path, monkeypatch):
    clean = runner.run(tiny_cfg(tmp_path / "clean"))
    clean_image = resume.load_checkpoint(tmp_path / "clean")["image"]

    killed = stopped_run(tmp_path / "killed", after_stage=1)  # Ctrl-C right after stage 2 was saved
    assert resume.load_checkpoint(killed)["stage"] == 1 and not (killed / outputs.METRICS).exists()

    stages_seen = []
    monkeypatch.setattr(outputs.Saver, "stage_started", lambda self, i, s, img: stages_seen.append(i), raising=False)
    resumed = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "elsewhere"), {"resume": str(killed)}))
    assert stages_seen == [2] and resumed.first_stage == 3
    assert (killed / outputs.METRICS).exists() and not (tmp_path / "elsewhere").exists()
    assert torch.equal(resume.load_checkpoint(killed)["image"], clean_image)
    assert resumed.mean_probability == pytest.approx(clean.mean_probability)


def test_resume_refuses_a_dir_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="no .hydra/config.yaml"):
        runner.run(tiny_cfg(tmp_path / "x", f"resume={tmp_path}"))


def test_sigterm_stops_cleanly_and_the_cli_run_resumes(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from tests.tiny import RANDOM_TINY
    from tests.wandb_file import finished_records, run_file

    out = tmp_path / "run"
    cmd = [sys.executable, "invert.py", *RANDOM_TINY, "schedule.steps=30", "logger=wandb", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=cli_env({"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (out / outputs.CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, log[-2000:]
    assert f"python invert.py resume={out}" in log
    assert [r.exit.exit_code for r in finished_records(run_file(out)) if r.WhichOneof("record_type") == "exit"] == [1]

    done = resume.load_checkpoint(out)["stage"] + 1
    assert done < 3 and not (out / outputs.METRICS).exists()
    metrics = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "unused"), {"resume": str(out)}))
    assert metrics.first_stage == done + 1 and (out / outputs.METRICS).exists()


def stopped_run(out_dir, after_stage: int):
    """A tiny run (3 stages) killed right after `after_stage` (0-based) was saved, as Hydra leaves it."""
    with stopped_after_stage(after_stage), pytest.raises(KeyboardInterrupt):
        runner.run(as_hydra_run(tiny_cfg(out_dir), out_dir))
    return out_dir


@pytest.mark.parametrize("override", ["schedule.stages=1", "schedule.steps=5", "augmentation.ensemble.size=4",
                                      "model.input_size=64", "class_id=[1]", "loss=tv", "seed=3",
                                      "experiment=fast", "augmentation=no_color_shift"])
def test_resume_refuses_overrides_that_change_what_the_checkpoint_means(tmp_path, override):
    killed = stopped_run(tmp_path / "killed", after_stage=0)
    cfg = OmegaConf.merge(tiny_cfg(tmp_path / "x", override), {"resume": str(killed)})
    with pytest.raises(ConfigError, match=f"resume=.*{override.split('=')[0]}.*would change"):
        resume.resumed_config(cfg, [override, f"resume={killed}"])


def test_resume_accepts_device_logger_verifier_and_a_repeated_value(tmp_path):
    killed = stopped_run(tmp_path / "killed", after_stage=0)
    overrides = ["device=cpu", "logger=wandb", "verifier=none", "schedule.stages=3", "precision=fp32"]
    cfg = OmegaConf.merge(tiny_cfg(tmp_path / "x", *overrides), {"resume": str(killed)})
    resumed = resume.resumed_config(cfg, overrides)
    assert resumed.logger._target_.endswith("WandbTracker") and not resumed.verifier and resumed.precision == "fp32"
    assert resumed.schedule.stages == 3 and resumed.output_dir == str(killed)


def test_cli_resume_with_fewer_stages_is_refused_and_nothing_is_written(tmp_path):
    """Stopped after stage 1 of 3, resumed with schedule.stages=1: saving the stage-1 image as the
    final one and exiting 0 would be wrong, so it is refused."""
    killed = stopped_run(tmp_path / "killed", after_stage=0)
    before = file_bytes(killed)
    proc = run_cli("invert.py", f"resume={killed}", "schedule.stages=1", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.splitlines() == [
        f"error: resume={killed}: schedule.stages=1 would change what its checkpoint means; a resumed run may "
        "change only device, precision, channels_last, fold_batchnorm, cudnn_benchmark, compile, logger, verifier (start a new run instead)"]
    assert file_bytes(killed) == before


def test_resuming_a_finished_run_reports_it_and_rewrites_nothing(tmp_path):
    """Not a rewrite of metrics.json with seconds ~0 and first_stage = stages + 1."""
    done = tmp_path / "done"
    cfg = tiny_cfg(done)
    as_hydra_run(cfg, done)
    finished = runner.run(cfg)
    before = file_bytes(done)
    again = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "elsewhere"), {"resume": str(done)}))
    assert again.seconds == pytest.approx(finished.seconds) and again.first_stage == 1
    assert file_bytes(done) == before
    assert not (tmp_path / "elsewhere").exists()


def test_cli_resume_logs_into_the_resumed_run(tmp_path):
    """A resumed run appends to its own invert.log and keeps its .hydra/ (no stray outputs/invert/<now>/)."""
    killed = stopped_run(tmp_path / "killed", after_stage=1)
    saved_config = (killed / ".hydra" / "config.yaml").read_text()
    strays = set((ROOT / "outputs" / "invert").glob("*"))
    proc = run_cli("invert.py", f"resume={killed}", "device=cpu")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "resuming" in (killed / "invert.log").read_text() and (killed / outputs.METRICS).exists()
    assert (killed / ".hydra" / "config.yaml").read_text() == saved_config
    assert set((ROOT / "outputs" / "invert").glob("*")) == strays


def test_a_run_saved_before_newer_keys_existed_resumes_with_their_defaults(tmp_path):
    old = tmp_path / "old"
    saved = OmegaConf.to_container(tiny_cfg(old), resolve=True)
    del saved["log_every"], saved["augmentation"]["chunk"]  # keys added after that run was made
    (old / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(saved), old / ".hydra" / "config.yaml")
    resumed = resume.resumed_config(tiny_cfg(tmp_path / "new", f"resume={old}"), overrides=[f"resume={old}"])
    assert resumed.log_every == 10 and resumed.augmentation.chunk == "auto"
    assert resumed.output_dir == str(old) and resumed.verifier == saved["verifier"]


# the augmentation group of runs made before each transform was a class of its own key (make run's stored
# run, and that version's conf/augmentation/pii.yaml with its presets), and the preset that runs the same now
FLAT_PII = {"jitter": 32, "flip": False, "ensemble_size": 32, "color_shift": True, "alpha": 1.0, "beta": 1.0,
            "chunk": "auto", "pad": 0, "shift": 0, "crops": None, "crop_centre_std": 0.15, "scale": None, "degrees": 0,
            "noise": 0}
FLAT = [(json.loads((ROOT / "docs/results/make-run/metrics.json").read_text())["config"]["augmentation"], "fast"),
        (FLAT_PII, "paper"),
        ({**FLAT_PII, "ensemble_size": 4, "jitter": 0, "color_shift": False, "pad": 12, "shift": 12,
          "scale": [0.9, 1.1], "degrees": 10}, "lucent"),
        ({**FLAT_PII, "ensemble_size": 6, "jitter": 0, "color_shift": False, "crops": [0.5, 1.0], "noise": 0.01}, "maco"),
        ({**FLAT_PII, "ensemble_size": 4, "color_shift": False, "flip": True}, "deepinversion_noise")]


@pytest.mark.parametrize("flat,preset", FLAT, ids=[preset for _, preset in FLAT])
def test_a_run_saved_with_flat_augmentation_keys_resumes_with_the_transforms_they_switched_on(tmp_path, flat, preset):
    old = tmp_path / "old"
    saved = OmegaConf.to_container(tiny_cfg(old), resolve=True)
    saved["augmentation"] = flat
    (old / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(saved), old / ".hydra" / "config.yaml")
    resumed = resume.resumed_config(tiny_cfg(tmp_path / "new", f"resume={old}"), overrides=[f"resume={old}"])
    now = compose_config([f"experiment={preset}", "output_dir=/x"]).augmentation
    assert OmegaConf.to_container(resumed.augmentation) == OmegaConf.to_container(now)
    assert list(resumed.augmentation) == list(now)  # the order they are applied in


@pytest.mark.parametrize("param,optimizer", [("pixel", "adam"), ("maco", "nadam")])
def test_a_run_saved_when_names_picked_the_classes_resumes_with_them(tmp_path, param, optimizer):
    """Before `_target_`, `param.name` and `schedule.optimizer` named the classes (and the param schema
    held every kind's keys, null where unused): such a run resumes with the same classes and values."""
    old = tmp_path / "old"
    saved = OmegaConf.to_container(tiny_cfg(old, f"param={param}", f"optimizer={optimizer}", "schedule.lr=0.3"),
                                   resolve=True)
    keys = ("decay", "sd", "decorrelate", "spectrum", "standardize_phase")
    saved["param"] = {"name": param, **{k: saved["param"].get(k) for k in keys}}
    saved["schedule"]["optimizer"] = optimizer
    del saved["optimizer"]
    (old / ".hydra").mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(saved), old / ".hydra" / "config.yaml")
    resumed = resume.resumed_config(tiny_cfg(tmp_path / "new", f"resume={old}"), overrides=[f"resume={old}"])
    fresh = tiny_cfg(old, f"param={param}", f"optimizer={optimizer}", "schedule.lr=0.3")
    for key in ("param", "optimizer"):
        assert OmegaConf.to_container(resumed[key], resolve=True) == OmegaConf.to_container(fresh[key], resolve=True)
    assert "optimizer" not in resumed.schedule and resumed.optimizer.lr == 0.3


TINY_JUDGE = ["verifier=timm", "verifier.timm.name=test_efficientnet", "verifier.timm.weights=random",
              "verifier.timm.num_classes=10", "verifier.timm.input_size=32"]


def test_a_run_whose_judges_fail_is_not_finished_and_resume_finishes_it(tmp_path, monkeypatch):
    """metrics.json marks a run finished, so it is written once, after the judges: judging that
    raises after the inversion leaves the images and the last stage's checkpoint but no metrics.json,
    and resume= then judges and writes it, with the whole run's time."""
    from pii.eval import judge

    out = tmp_path / "run"
    cfg = as_hydra_run(tiny_cfg(out, *TINY_JUDGE), out)

    def fail(*args, **kwargs):
        raise RuntimeError("the judge broke")

    with monkeypatch.context() as patch:
        patch.setattr(judge, "judge_run", fail)
        with pytest.raises(RuntimeError, match="the judge broke"):
            runner.run(cfg)
    assert not (out / outputs.METRICS).exists() and (out / "1_class-1.png").is_file()
    checkpoint = resume.load_checkpoint(out)
    assert checkpoint["stage"] == 2 and checkpoint["seconds"] > 0
    resumed = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "unused"), {"resume": str(out)}))
    saved = OmegaConf.load(out / outputs.METRICS)
    assert list(saved.judge) == ["timm"] and saved.judge.timm.images == 2
    assert resumed.first_stage == 4 and resumed.seconds >= checkpoint["seconds"]
    assert saved.seconds_per_class == pytest.approx(resumed.seconds / 2) and saved.seconds_per_class > 0


def test_a_resumed_run_reports_the_whole_runs_time(tmp_path):
    """The stages before the stop are counted (the checkpoint keeps their time); a checkpoint without
    it (an older pii) gives null, which the leaderboard shows as unknown, never as fast."""
    from pii.eval import results
    from pii.eval.leaderboard import Row, markdown

    killed = stopped_run(tmp_path / "killed", after_stage=0)
    before = resume.load_checkpoint(killed)["seconds"]
    resumed = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "x"), {"resume": str(killed)}))
    assert resumed.seconds >= before + sum(stage.seconds for stage in resumed.stage_seconds)

    old = stopped_run(tmp_path / "old", after_stage=1)
    checkpoint = torch.load(old / outputs.CHECKPOINT, weights_only=True)
    del checkpoint["seconds"]
    torch.save(checkpoint, old / outputs.CHECKPOINT)
    unknown = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "y"), {"resume": str(old)}))
    assert unknown.seconds is None and unknown.seconds_per_class is None
    assert results.read(old / outputs.METRICS).seconds_per_class is None
    row = Row("pixel", "custom")
    row.add(resumed)
    row.add(unknown)
    assert row.summary()["seconds_per_class"] is None and markdown([row.summary()]).endswith("| unknown |")


def test_resume_takes_a_class_given_as_a_list_of_one_as_the_same(tmp_path):
    """A run started with class_id=1, resumed with class_id=[1]: the same class, not a change."""
    started = tmp_path / "started"
    as_hydra_run(tiny_cfg(started, "class_id=1"), started)
    resumed = resume.resumed_config(tiny_cfg(tmp_path / "x", "class_id=[1]", f"resume={started}"),
                                    ["class_id=[1]", f"resume={started}"])
    assert resumed.class_id == 1
    with pytest.raises(ConfigError, match=r"class_id=\[1,2\] would change"):
        resume.resumed_config(tiny_cfg(tmp_path / "x", "class_id=[1,2]", f"resume={started}"),
                              ["class_id=[1,2]", f"resume={started}"])
