"""Resume: a run stopped after a stage continues there, and ends where an
uninterrupted run with the same seed ends."""

import pytest
import torch
from omegaconf import OmegaConf

from pii import outputs, resume, runner
from pii.errors import ConfigError
from tests.tiny import tiny_cfg


def as_hydra_run(cfg, out_dir):
    """What Hydra leaves in a job's dir, which resume= reads."""
    (out_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / ".hydra" / "config.yaml")


def test_resume_continues_at_the_next_stage_and_matches_a_clean_run(tmp_path, monkeypatch):
    clean = runner.run(tiny_cfg(tmp_path / "clean"))
    clean_image = resume.load_checkpoint(tmp_path / "clean")["image"]

    killed = tmp_path / "killed"
    cfg = tiny_cfg(killed)
    as_hydra_run(cfg, killed)
    save_stage = outputs.Saver.stage_done

    def stop_after_second_stage(self, index, stage, image):
        save_stage(self, index, stage, image)
        if index == 1:
            raise KeyboardInterrupt  # Ctrl-C right after stage 2 was saved

    monkeypatch.setattr(outputs.Saver, "stage_done", stop_after_second_stage)
    with pytest.raises(KeyboardInterrupt):
        runner.run(cfg)
    assert resume.load_checkpoint(killed)["stage"] == 1 and not (killed / outputs.METRICS).exists()
    monkeypatch.setattr(outputs.Saver, "stage_done", save_stage)

    stages_seen = []
    monkeypatch.setattr(outputs.Saver, "stage_started", lambda self, i, s, img: stages_seen.append(i), raising=False)
    resumed = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "elsewhere"), {"resume": str(killed)}))
    assert stages_seen == [2] and resumed["first_stage"] == 3
    assert (killed / outputs.METRICS).exists() and not (tmp_path / "elsewhere").exists()
    assert torch.equal(resume.load_checkpoint(killed)["image"], clean_image)
    assert resumed["mean_probability"] == pytest.approx(clean["mean_probability"])


def test_resume_refuses_a_dir_that_is_not_a_run(tmp_path):
    with pytest.raises(ConfigError, match="no .hydra/config.yaml"):
        runner.run(tiny_cfg(tmp_path / "x", f"resume={tmp_path}"))


def test_sigterm_stops_cleanly_and_the_cli_run_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from tests.tiny import RANDOM_TINY
    from tests.wandb_file import finished_records

    out = tmp_path / "run"
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "invert.py", *RANDOM_TINY, "schedule.steps=30", "logger=wandb", f"hydra.run.dir={out}"]
    proc = subprocess.Popen(cmd, cwd=root, env={**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not (out / outputs.CHECKPOINT).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, log[-2000:]
    assert f"python invert.py resume={out}" in log
    (wandb_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    assert [r.exit.exit_code for r in finished_records(wandb_file) if r.WhichOneof("record_type") == "exit"] == [1]

    done = resume.load_checkpoint(out)["stage"] + 1
    assert done < 3 and not (out / outputs.METRICS).exists()
    metrics = runner.run(OmegaConf.merge(tiny_cfg(tmp_path / "unused"), {"resume": str(out)}))
    assert metrics["first_stage"] == done + 1 and (out / outputs.METRICS).exists()
