"""Bad input at the entry points, as a new user would type it.

Every row of BAD runs the real entry point as a subprocess: `invert.py`,
`train_invert.py`, `scripts/judge.py`, `scripts/report.py`, `scripts/digits_claim.py`. Each must exit
with code 2, print no traceback, print at most 2 lines on stderr that name the
key or file, and leave every file under the test's directory as it was (an
earlier finished run, damaged copies of it, a sweep): the checks run before
anything is written. Most rows fail in pii.run.cli.preflight before torch is
imported, so the table costs about a second a row.
"""

import shutil
from pathlib import Path

import pytest
import torch
from conftest import Payload, as_hydra_run, file_bytes, run_cli, stopped_after_stage

from pii.run import runner
from tests.tiny import tiny_cfg

ENTRY = {"invert": "invert.py", "train": "train_invert.py", "judge": "scripts/judge.py",
         "report": "scripts/report.py", "digits": "scripts/digits_claim.py"}

# (entry point, arguments ({d} = the test's directory), what stderr must name)
BAD = [
    ("invert", "schedule.lr=-0.01", "schedule.lr"),
    ("invert", "schedule.lr=0", "schedule.lr"),
    ("invert", "schedule.lr=abc", "schedule.lr"),
    ("invert", "schedule.betas=[1.5,0.99]", "schedule.betas"),
    ("invert", "betas=[1.5,0.99]", "betas"),
    ("invert", "seed=abc", "seed"),
    ("invert", "augmentation.ensemble_size=abc", "augmentation.ensemble_size"),
    ("invert", "augmentation.ensemble_size=1.5", "augmentation.ensemble_size"),
    ("invert", "augmentation.ensemble_size=0", "augmentation.ensemble_size"),
    ("invert", "augmentation.jitter=abc", "augmentation.jitter"),
    ("invert", "augmentation.jitter=-1", "augmentation.jitter"),
    ("invert", "augmentation.alpha=-1", "augmentation.alpha"),
    ("invert", "augmentation.crops=[0.5]", "augmentation.crops"),
    ("invert", "augmentation.crops=[0,1]", "augmentation.crops"),
    ("invert", "augmentation.scale=[1.1,0.9]", "augmentation.scale"),
    ("invert", "augmentation.degrees=-5", "augmentation.degrees"),
    ("invert", "augmentation.pad=-2", "augmentation.pad"),
    ("invert", "augmentation.noise=-0.1", "augmentation.noise"),
    ("invert", "optimizer=sgd", "optimizer/sgd"),
    ("invert", "schedule.optimizer=nadam", "schedule.optimizer"),
    ("invert", "param._target_=pii.core.param.Nothing", "param._target_"),
    ("invert", "param=fourier param.decay=-1", "param.decay"),
    ("invert", "model.input_size=0", "model.input_size"),
    ("invert", "model.input_size=-5", "model.input_size"),
    ("invert", "model.std=[0,1,1]", "model.std"),
    ("invert", "device=meta", "device"),
    ("invert", "precision=fp16", "precision"),
    ("invert", "class_id=[980,980,1]", "class_id"),
    ("invert", "class_id=5000", "class_id"),
    ("invert", "class_id=abc", "class_id"),
    ("invert", "schedule.stages=0", "schedule.stages"),
    ("invert", "schedule.steps=-5", "schedule.steps"),
    ("invert", "loss.tv_weight=-1", "loss.tv_weight"),
    ("invert", "log_every=0", "log_every"),
    ("invert", "augmentation.chunk=0", "augmentation.chunk"),
    ("invert", "compile=maybe", "compile"),
    ("invert", "model=no_such_model", "model/no_such_model"),
    ("invert", "foo=1", "foo"),
    ("invert", "init_from={d}/truncated_png class_id=[1,2]", "truncated_png/1_class-1.png"),
    ("invert", "init_from={d}/missing_png class_id=[1,2]", "missing_png/1_class-1.png"),
    ("invert", "init_from={d}/earlier", "class [980]"),
    ("invert", "init_from={d}/bad_metrics", "bad_metrics/metrics.json"),
    ("invert", "init_from={d}/nowhere", "nowhere"),
    ("invert", "resume={d}/truncated_checkpoint", "truncated_checkpoint/checkpoint.pt"),
    ("invert", "resume={d}/pickle_checkpoint", "could run code"),
    ("invert", "resume={d}/stopped schedule.stages=1", "schedule.stages=1"),
    ("invert", "resume={d}/nowhere", "nowhere"),
    ("invert", "resume={d}/stopped init_from={d}/earlier", "init_from"),
    ("invert", "model.weights={d}/nowhere.pth", "nowhere.pth"),
    ("invert", "model.weights={d}/earlier", "is a directory"),
    ("invert", "-m augmentation.ensemble_size=1,abc,0 hydra.sweep.dir={d}/sweep_out",
     "job 1 (augmentation.ensemble_size=abc)"),
    ("invert", "hydra.run.dir={d}/earlier/grid.png/run", "grid.png"),
    ("train", "schedule.batch_size=0", "schedule.batch_size"),
    ("train", "grid_images=0", "grid_images"),
    ("train", "conditions=[]", "conditions"),
    ("train", "conditions=[pixels]", "conditions"),
    ("train", "schedule.steps=0", "schedule.steps"),
    ("train", "schedule.steps=abc", "schedule.steps"),
    ("train", "generator.resolution=48", "generator.resolution"),
    ("train", "mode=explore", "mode"),
    ("train", "classifier.epochs=0", "classifier.epochs"),
    ("train", "data._target_=no.such.builder", "data._target_"),
    ("train", "+data.colour=1", "colour"),
    ("train", "-m schedule.steps=2,0 hydra.sweep.dir={d}/sweep_out", "job 1 (schedule.steps=0)"),
    ("train", "hydra.run.dir={d}/earlier/grid.png/run", "grid.png"),
    ("judge", "", "usage"),
    ("judge", "{d}/nowhere", "nowhere"),
    ("judge", "{d}/earlier/metrics.json", "metrics.json"),
    ("judge", "{d}/only_truncated_png", "only_truncated_png"),
    ("judge", "{d}/earlier verifier=none", "verifier"),
    ("judge", "{d}/earlier device=meta", "device"),
    ("report", "", "multirun_dir"),
    ("report", "{d}/nowhere", "nowhere"),
    ("report", "{d}/earlier", "earlier"),
    ("report", "{d}/sweep --cell=0", "--cell"),
    ("report", "{d}/sweep --cell=abc", "--cell"),
    ("digits", "--skip-train --out {d} --architectures cnn,transformer", "--architectures"),
    ("digits", "--skip-train --out {d} --methods pii,dream", "--methods"),
]


@pytest.fixture(scope="module")
def earlier(tmp_path_factory) -> Path:
    """An earlier finished tiny run, a stopped one, damaged copies of them, and a two-job sweep."""
    d = tmp_path_factory.mktemp("bad_inputs")
    runner.run(as_hydra_run(tiny_cfg(d / "earlier", "verifier=none"), d / "earlier"))
    with stopped_after_stage(0), pytest.raises(KeyboardInterrupt):
        runner.run(as_hydra_run(tiny_cfg(d / "stopped", "verifier=none"), d / "stopped"))
    for name in ("truncated_png", "missing_png", "bad_metrics"):
        shutil.copytree(d / "earlier", d / name)
    png = (d / "earlier" / "1_class-1.png").read_bytes()
    (d / "truncated_png" / "1_class-1.png").write_bytes(png[: len(png) // 2])
    (d / "missing_png" / "1_class-1.png").unlink()
    (d / "bad_metrics" / "metrics.json").write_text('{"classes": [')
    (d / "only_truncated_png").mkdir()
    (d / "only_truncated_png" / "1_class-1.png").write_bytes(png[: len(png) // 2])
    for name in ("truncated_checkpoint", "pickle_checkpoint"):
        shutil.copytree(d / "stopped", d / name)
    ckpt = (d / "stopped" / "checkpoint.pt").read_bytes()
    (d / "truncated_checkpoint" / "checkpoint.pt").write_bytes(ckpt[: len(ckpt) // 2])
    import pickle

    (d / "pickle_checkpoint" / "checkpoint.pt").write_bytes(pickle.dumps({"stage": Payload()}))
    for job in ("0_seed=0", "1_seed=1"):
        shutil.copytree(d / "earlier", d / "sweep" / job)
        (d / "sweep" / job / ".hydra" / "overrides.yaml").write_text(f"- {job.split('_', 1)[1]}\n")
    return d


@pytest.mark.parametrize("entry,args,names", BAD, ids=[f"{e}:{a}" for e, a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(earlier, entry, args, names):
    before = file_bytes(earlier)
    args = args.format(d=earlier).split()
    if entry == "invert" and not any(a.startswith(("hydra.run.dir", "resume=", "-m")) for a in args):
        args.append(f"hydra.run.dir={earlier / 'earlier'}")  # the earlier run's dir: it must stay untouched
    if entry == "train" and not any(a.startswith(("hydra.run.dir", "-m")) for a in args):
        args.append(f"hydra.run.dir={earlier / 'earlier'}")
    proc = run_cli(ENTRY[entry], *args, timeout=60)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert 1 <= len(lines) <= 2, lines
    assert names.format(d=earlier) in proc.stderr, lines
    assert "this ran at load time" not in proc.stdout + proc.stderr
    assert file_bytes(earlier) == before


def test_duplicate_class_ids_are_refused_before_anything_runs(tiny_config):
    """class_id=[980,980,1] would write both 980 images to one file: refused."""
    from pii.errors import ConfigError
    from pii.run.config import check_invert

    with pytest.raises(ConfigError, match="class_id lists 980 twice"):
        runner.run(tiny_config("class_id=[980,980,1]"))
    with pytest.raises(ConfigError, match="class_id lists 1 twice"):
        check_invert(tiny_config("class_id=[1,2,1]"))


def test_a_damaged_weights_file_fails_in_the_run_and_its_log_says_why(earlier, tmp_path):
    """Errors met inside the run (a file's content) leave the new run's .hydra/ and a log that records them."""
    bogus = tmp_path / "notes.pth"
    bogus.write_text("not weights")
    proc = run_cli("invert.py", "model=timm", "model.name=test_efficientnet", "model.num_classes=10", "class_id=1",
                   "model.input_size=32", f"model.weights={bogus}", "verifier=none", "device=cpu",
                   f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: model.weights {str(bogus)!r} is damaged or not a checkpoint")
    assert "is damaged or not a checkpoint" in (tmp_path / "run" / "invert.log").read_text()
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".hydra", "invert.log"]


def test_judge_skips_a_damaged_png_and_judges_the_others(earlier, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(earlier / "earlier", runs / "good")
    shutil.copytree(earlier / "truncated_png", runs / "damaged")
    proc = run_cli("scripts/judge.py", runs, "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "skipped" in line]
    assert len(warnings) == 1 and "damaged/1_class-1.png" in warnings[0]
    import json

    judged = json.loads((runs / "judge.json").read_text())
    assert judged["overall"]["efficientnet_lite2"]["images"] == 3  # 2 good + 1 of the damaged run's 2


def test_report_shows_a_job_with_damaged_metrics_as_unfinished(earlier, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(earlier / "sweep", sweep)
    (sweep / "1_seed=1" / "metrics.json").write_text("{")
    proc = run_cli("scripts/report.py", sweep, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped" in proc.stderr and "1_seed=1/metrics.json" in proc.stderr
    assert (sweep / "ablation_grid.png").is_file() and (sweep / "report.html").is_file()


def test_a_killed_run_is_continued_by_resume(earlier, tmp_path):
    """What the README promises: a stopped run keeps its finished stages and `resume=` finishes it."""
    stopped = tmp_path / "stopped"
    shutil.copytree(earlier / "stopped", stopped)
    assert torch.load(stopped / "checkpoint.pt", weights_only=True)["stage"] == 0
    proc = run_cli("invert.py", f"resume={stopped}", "device=cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (stopped / "metrics.json").is_file() and (stopped / "1_class-1.png").is_file()
