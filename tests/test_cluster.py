"""Sweeps past one machine (docs/cluster.md), run for real on tiny random-weight models: a class list
split into jobs and gathered as one run (report, leaderboard, W&B); a job that fails alone and a
resumed sweep that runs only it; submitit's local executor, which pickles, starts and gathers jobs as
on SLURM, with a job stopped by SIGTERM (a SLURM time limit) and the sweep resumed; the docs' SLURM
recipe as sbatch would get it. The Ray launcher: tests/test_ray.py."""

import json
import os
import pickle
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from PIL import Image

from pii.eval import gallery, leaderboard, results
from pii.run.sweep import SUMMARY
from tests.test_tracking import JUDGE, summary_of
from tests.tiny import RANDOM_TINY
from tests.wandb_file import history, run_record

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
TINY = [o for o in RANDOM_TINY if not o.startswith("class_id=")]
SHORT = "hydra.sweep.subdir=${hydra.job.num}_job"  # job dirs named by number: the overrides are many


def invert_py(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python invert.py <args>` in a real interpreter (the launchers start processes of their own, and
    ATen reads ATEN_CPU_CAPABILITY when torch loads)."""
    return subprocess.run([sys.executable, "invert.py", *args], cwd=ROOT, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout)


def sweep(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    return invert_py("-m", *args, timeout=timeout, env=env)


def states(sweep_dir: Path) -> list[str]:
    return [job["state"] for job in json.loads((sweep_dir / SUMMARY).read_text())["jobs"]]


def continue_command(stderr: str) -> list[str]:
    """The command a sweep that did not finish prints to continue it, ready to run."""
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "continue it with: python invert.py -m " in line, stderr[-2000:]
    words = shlex.split(line.split("continue it with: ", 1)[1])
    return [sys.executable, *words[1:]]


def test_a_class_list_split_into_jobs_is_gathered_as_one_run(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "split"
    proc = sweep(*TINY, "class_id=[1,2,3,4,5,6]", "classes_per_job=2", "logger=wandb", *JUDGE,
                 f"hydra.sweep.dir={sweep_dir}", SHORT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert states(sweep_dir) == ["finished"] * 3  # the job count came from the list: 6 classes, 2 per job
    runs = [results.read(sweep_dir / f"{k}_job" / "metrics.json") for k in range(3)]
    assert [[c.class_id for c in run.classes] for run in runs] == [[1, 2], [3, 4], [5, 6]]
    verdicts = [v for run in runs for v in run.judge["timm"].classes]

    # the report: one row with all six classes
    (job,) = gallery.collect(sweep_dir)
    assert [c.class_id for c in job.classes] == [1, 2, 3, 4, 5, 6] and all(job.image(c) for c in range(1, 7))
    monkeypatch.chdir(tmp_path)  # named relative to where the command runs, as on a command line
    (job,) = gallery.collect(Path("split"))
    assert all(job.image(c) and job.image(c).is_file() for c in range(1, 7))
    grid_path, _ = gallery.write_report(sweep_dir, cell=64)
    assert Image.open(grid_path).size == (200 + 6 * (64 + 6) + 6, 40 + (64 + 18 + 6) + 6)

    # the leaderboard: one row over the six, its judged figures those of the six verdicts
    (row,), _ = leaderboard.leaderboard([sweep_dir])
    judged = row["judges"]["timm"]
    assert row["images"] == 6 and row["seeds"] == [0]
    assert judged["top1"] == pytest.approx(sum(v.top1 for v in verdicts) / 6)
    assert judged["mean_probability"] == pytest.approx(sum(v.probability for v in verdicts) / 6)

    # W&B: the jobs and a run of all six classes share the sweep's group
    for k in range(3):
        (path,) = (sweep_dir / f"{k}_job").glob("wandb/offline-run-*/run-*.wandb")
        assert run_record(path).run_group == "split"
    (path,) = (sweep_dir / "all_classes").glob("wandb/offline-run-*/run-*.wandb")
    record = run_record(path)
    assert (record.run_group, record.display_name) == ("split", "all_classes")
    summary = summary_of(path)
    assert summary["judge/timm/top1"] == pytest.approx(judged["top1"])
    assert summary["judge/timm/mean_probability"] == pytest.approx(judged["mean_probability"])
    table = next(r for r in history(path) if "results/_type" in r)
    table_file = json.loads((path.parent / "files" / table["results/path"]).read_text())
    assert [row[0] for row in table_file["data"]] == [1, 2, 3, 4, 5, 6]


def test_a_failing_job_fails_alone_and_the_resumed_sweep_runs_only_it(tmp_path):
    import timm
    import torch

    weights = tmp_path / "weights.pt"
    broken = timm.create_model("test_efficientnet", num_classes=10).state_dict()
    name = next(key for key in broken if key.endswith("running_var"))
    broken[name][0] = -1.0  # finite, so the preflight's read passes; the model gives nan once built in the job
    torch.save(broken, weights)
    sweep_dir = tmp_path / "faults"
    proc = sweep(*RANDOM_TINY, f"model.weights={weights},random", "verifier=none",
                 f"hydra.sweep.dir={sweep_dir}", SHORT)
    assert proc.returncode == 1
    assert "1 of the sweep's 2 jobs did not finish (job 0 failed: model.weights" in proc.stderr
    assert states(sweep_dir) == ["failed", "finished"]  # the job after the failed one ran
    finished = sweep_dir / "1_job" / "metrics.json"
    assert results.read(finished).classes and not (sweep_dir / "0_job" / "metrics.json").exists()
    assert "damaged" in (sweep_dir / "0_job" / "invert.log").read_text()

    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), weights)  # repaired
    stamp = finished.stat().st_mtime_ns
    again = subprocess.run(continue_command(proc.stderr), cwd=ROOT, env=ENV, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert states(sweep_dir) == ["finished", "finished"]
    assert finished.stat().st_mtime_ns == stamp  # the finished job was skipped
    assert "finished jobs skipped: 1" in again.stderr + again.stdout


def test_submitit_jobs_run_apart_one_stopped_by_sigterm_and_the_sweep_resumed(tmp_path):
    """Jobs pickled, started as processes of their own and gathered by submitit (its local executor:
    SLURM's path without SLURM); job 1 gets SIGTERM, as SLURM sends at a time limit."""
    sweep_dir = tmp_path / "submitit"
    args = ["hydra/launcher=submitit_local", *RANDOM_TINY, "schedule.steps=3,200", "verifier=none",
            f"hydra.sweep.dir={sweep_dir}", SHORT]
    proc = subprocess.Popen([sys.executable, "invert.py", "-m", *args], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    stopped = sweep_dir / "1_job" / "checkpoint.pt"
    deadline = time.monotonic() + 240
    while not stopped.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert stopped.exists(), f"job 1 saved no stage: {proc.poll()} {proc.stderr.read()[-3000:] if proc.poll() else ''}"
    # submitit's folder for a local job is named by its controller's pid, which passes SIGTERM on
    (controller,) = [p.parent.name for p in sweep_dir.glob(".submitit/*/*_log.out") if "1_job" in p.read_text()]
    os.kill(int(controller), signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 1, stderr[-3000:]
    assert "job 1 interrupted" in stderr and states(sweep_dir) == ["finished", "interrupted"]
    assert not (sweep_dir / "1_job" / "metrics.json").exists()
    done = json.loads((sweep_dir / "0_job" / "metrics.json").read_text())

    again = subprocess.run(continue_command(stderr), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert states(sweep_dir) == ["finished", "finished"]
    assert json.loads((sweep_dir / "0_job" / "metrics.json").read_text()) == done  # skipped, not run again
    resumed = results.read(sweep_dir / "1_job" / "metrics.json")
    assert resumed.first_stage > 1 and resumed.steps == 3 * 200  # continued after its saved stages
    assert "resuming" in (sweep_dir / "1_job" / "invert.log").read_text()


def slurm_recipe() -> list[str]:
    """The SLURM command of docs/sweeps.md, its continued lines joined, with the sbatch option it shows."""
    text = (ROOT / "docs" / "sweeps.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if "hydra/launcher=slurm" in b)
    command = next(c for c in block.replace("\\\n", " ").splitlines() if "hydra/launcher=slurm" in c)
    extra = re.search(r"`(\+hydra\.launcher\.additional_parameters\.\w+=\w+)`", text).group(1)
    return [*shlex.split(command)[2:], extra]


def test_the_readme_slurm_recipe_submits_an_array_with_its_settings(tmp_path):
    """No SLURM here: a stand-in sbatch keeps the script that submitit hands it, then refuses it."""
    bin_dir, script = tmp_path / "bin", tmp_path / "submitted.sh"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {script}\necho "sbatch: error: no controller" >&2\nexit 1\n')
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")  # submitit looks for it
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    recipe = slurm_recipe()
    assert "-m" in recipe and "experiment=sweep_ensemble" in recipe
    sweep_dir = tmp_path / "slurm"
    proc = invert_py(*recipe, f"hydra.sweep.dir={sweep_dir}", env={**ENV, "PATH": f"{bin_dir}:{ENV['PATH']}"})
    assert proc.returncode == 1 and "jobs 0, 1, 2, 3, 4, 5, 6 not started: the launcher stopped" in proc.stderr, \
        proc.stderr[-3000:]
    options = dict(re.findall(r"#SBATCH --([\w-]+)=(\S+)", script.read_text()))
    given = {o.split("=")[0].rsplit(".", 1)[-1]: o.split("=")[1] for o in recipe
             if o.startswith(("hydra.launcher.", "+hydra.launcher."))}
    assert options["partition"] == given["partition"] and options["time"] == given["timeout_min"]
    assert options["gpus-per-node"] == given["gpus_per_node"] and options["cpus-per-task"] == given["cpus_per_task"]
    assert options["account"] == given["account"]  # additional_parameters reach sbatch
    assert options["array"] == f"0-6%{min(7, int(given['array_parallelism']))}"  # one task per ensemble size
    assert options["signal"].startswith("USR2@")  # submitit's warning before the time limit
    # each job as pickled for the cluster: its overrides, run by the sweeper's task wrapper
    jobs = []
    for path in sweep_dir.glob(".submitit/*.pkl"):
        with open(path, "rb") as f:
            delayed = pickle.load(f)
        jobs.append((delayed.args[2], delayed.args[0]))
        assert type(delayed.function.task_function).__name__ == "FailsAlone"
    sizes = [next(o for o in overrides if o.startswith("augmentation.ensemble.size=")) for _, overrides in sorted(jobs)]
    assert sizes == [f"augmentation.ensemble.size={e}" for e in (1, 2, 4, 8, 16, 32, 64)]
    assert all("logger=wandb" in overrides for _, overrides in jobs)


def test_classes_per_job_cuts_the_list_and_a_chunk_is_named_in_range():
    from pii.errors import ConfigError
    from pii.models.classes import job_classes

    assert [job_classes([1, 2, 3, 4, 5], 10, 2, k) for k in range(3)] == [[1, 2], [3, 4], [5]]
    assert job_classes([1, 2, 3], 10) == [1, 2, 3]
    with pytest.raises(ConfigError, match=r"into 3 jobs: run it as a sweep \(-m\)"):
        job_classes([1, 2, 3, 4, 5], 10, 2)  # a single run of a split list
    with pytest.raises(ConfigError, match="class_chunk must be 0..2"):
        job_classes([1, 2, 3, 4, 5], 10, 2, 3)
    with pytest.raises(ConfigError, match="classes_per_job must be a number of classes >= 1"):
        job_classes([1, 2], 10, 0, 0)


def test_resume_refuses_a_different_sweep_and_a_dir_that_is_no_sweep(tmp_path):
    from hydra import compose, initialize_config_dir

    from pii import CONF_DIR
    from pii.errors import ConfigError
    from pii.run.sweep import MULTIRUN, continue_in

    (tmp_path / "run").mkdir()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        master = compose("config", return_hydra_config=True)
    OmegaConf.save({"hydra": {"overrides": {"task": ["seed=0,1", "device=cpu"]}}}, tmp_path / MULTIRUN)
    continue_in(master, tmp_path, ["seed=0,1", "device=cuda", f"resume={tmp_path}"])  # device may change
    assert master.hydra.sweep.dir == str(tmp_path)
    with pytest.raises(ConfigError, match="seed=0,1 device=cpu"):
        continue_in(master, tmp_path, ["seed=0,1,2", f"resume={tmp_path}"])
    with pytest.raises(ConfigError, match="no multirun.yaml"):
        continue_in(master, tmp_path / "run", [])


def test_a_chunk_of_the_list_gives_its_classes_the_images_of_one_run_over_the_list(tmp_path):
    # each class draws from its own streams (pii.core.draws): the jobs of a split list and one run over
    # the list differ only in how batched kernels round (docs/cluster.md). Adam divides a gradient by
    # its own size, so where a pixel's gradient is near zero a rounding difference can flip its step:
    # the largest difference depends on the kernels (4e-7 with AVX-512, 1e-4 with oneDNN held to
    # SSE4.1) and stays far under one step of lr; the mean stays at rounding. Another seed moves
    # pixels by tenths.
    import torch

    from pii.run import resume, runner
    from tests.tiny import tiny_cfg

    def images(name, *overrides):
        runner.run(tiny_cfg(tmp_path / name, "class_id=[1,2,3,4]", "precision=fp32", "verifier=none", *overrides))
        return resume.load_checkpoint(tmp_path / name)["image"]

    whole = images("whole")
    split = torch.cat([images(f"chunk{k}", "classes_per_job=2", f"class_chunk={k}") for k in (0, 1)])
    difference = (split - whole).abs()
    print(f"split vs whole: max {difference.max():.2e}, mean {difference.mean():.2e}")
    assert difference.max() < 1e-3 and difference.mean() < 1e-6
    assert (images("seed1", "seed=1") - whole).abs().amax((1, 2, 3)).min() > 0.1


def test_on_one_thread_with_portable_kernels_a_chunk_gives_its_classes_the_very_images_of_the_whole_list(tmp_path):
    # docs/cluster.md's recipe for bit-identical images: what still differs between a chunk and the whole
    # list otherwise is where vector and scalar code meet in ATen's elementwise kernels (the Fourier
    # image's sigmoid) and how a resize splits its work over threads
    import torch

    from pii.run import resume

    env = {**ENV, "ATEN_CPU_CAPABILITY": "default"}
    # the settings set, as the recipe sets them: auto could settle a chunk of the list differently
    common = [*TINY, "class_id=[1,2,3,4]", "param=fourier", "precision=fp32", "channels_last=true",
              "augmentation.chunk=1000", "verifier=none"]
    whole = invert_py(*common, f"hydra.run.dir={tmp_path / 'whole'}", env=env)
    assert whole.returncode == 0, whole.stderr[-2000:]
    split = sweep(*common, "classes_per_job=2", f"hydra.sweep.dir={tmp_path / 'split'}", SHORT, env=env)
    assert split.returncode == 0, split.stderr[-2000:]
    chunks = torch.cat([resume.load_checkpoint(tmp_path / "split" / f"{k}_job")["image"] for k in (0, 1)])
    assert torch.equal(chunks, resume.load_checkpoint(tmp_path / "whole")["image"])
