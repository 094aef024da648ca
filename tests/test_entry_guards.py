"""One entry path that no Hydra flag or sweep value walks around.

Every entry point that takes Hydra overrides or writes into a run's directory (invert.py,
train_invert.py, scripts/benchmark_quality.py, scripts/judge.py) is started at a finished run with
Hydra's flags among its overrides: each is refused with one line and exit code 2, or (a flag that
only prints) writes nothing, and the finished run stays byte-identical. A sweep's job directories
stay folders of the sweep, whatever its values hold; a sweep's job holds its directory's lock;
sweep.json is written whole or not at all; SIGTERM to a sweep prints how to continue it; Hydra's
private API is reached from one module, written against one Hydra release.
"""

import copy
import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, as_hydra_run, cli_env, compose_config, run_cli, stopped_after_stage
from omegaconf import OmegaConf, read_write

from pii import CONF_DIR, files
from pii.errors import ConfigError, WriteError
from pii.run import runner, sweep
from pii.run.cli import Checked, Plan, check_invert_job, planned
from tests.tiny import RANDOM_TINY, tiny_cfg

TINY = [*RANDOM_TINY, "verifier=none"]
FAST = [a for a in TINY if not a.startswith(("schedule.stages", "schedule.steps"))] + ["schedule.stages=2",
                                                                                        "schedule.steps=2"]


def snapshot(root: Path) -> dict[Path, str]:
    """Every file under `root` and its hash."""
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run (its .hydra/ as Hydra saves it), alone in its own folder."""
    d = tmp_path_factory.mktemp("entry_guards") / "finished"
    runner.run(as_hydra_run(tiny_cfg(d, "verifier=none"), d))
    assert (d / "metrics.json").is_file()
    return d


# (entry point, its arguments: {run} is the finished run's dir) - each must be refused, exit 2
FLAGS = ["--config-name config", "-cn config", "--config-name=config", "--config-dir conf", "-cd conf",
         "--config-path conf", "-cp conf", "--bogus", "--experimental-rerun x", "--package model", "--resolve",
         "-r -m", "hydra.mode=MULTIRUN", "--run --info defaults", "-m --cfg job"]
REFUSED = ([("invert.py", f"{flag} {' '.join(TINY)} hydra.run.dir={{run}}") for flag in FLAGS]
           + [("invert.py", f"-m {flag} {' '.join(TINY)} seed=0,1 hydra.sweep.dir={{run}}") for flag in FLAGS[:5]]
           + [("invert.py", f"{flag} {' '.join(TINY)} resume={{run}} hydra.run.dir={{run}}/x") for flag in FLAGS[:2]]
           + [("invert.py", f"{' '.join(TINY)} hydra.output_subdir={sub} hydra.run.dir={{run}}/../new")
              for sub in ("../finished/.hydra", "{run}/.hydra")]
           + [("train_invert.py", f"{flag} data=digits device=cpu hydra.run.dir={{run}}") for flag in FLAGS]
           + [("scripts/benchmark_quality.py", f"{flag} {' '.join(TINY)} output_dir={{run}}") for flag in FLAGS[:4]]
           + [("scripts/judge.py", f"{{run}} {flag} verifier=none") for flag in FLAGS[:4]])


@pytest.mark.parametrize("script,args", REFUSED, ids=[f"{s}:{a.replace(' '.join(TINY), 'TINY')}" for s, a in REFUSED])
def test_a_hydra_flag_never_walks_around_the_checks(finished, script, args):
    before = snapshot(finished.parent)
    proc = run_cli(script, *args.format(run=finished).split())
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert snapshot(finished.parent) == before


def test_config_dir_and_config_name_are_honoured_and_checked(tmp_path):
    """-cd/-cn compose the user's config (searched after conf/), which runs checked, locked and refused
    over a run like any other."""
    (tmp_path / "my").mkdir()
    (tmp_path / "my" / "mine.yaml").write_text("defaults:\n  - config\n  - _self_\nseed: 7\n")
    run = tmp_path / "run"
    proc = run_cli("invert.py", "-cd", tmp_path / "my", "-cn", "mine", *FAST, f"hydra.run.dir={run}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert OmegaConf.load(run / ".hydra" / "config.yaml").seed == 7 and (run / "metrics.json").is_file()
    before = snapshot(tmp_path)
    proc = run_cli("invert.py", "-cd", tmp_path / "my", "-cn", "mine", *FAST, "schedule.lr=-1", f"hydra.run.dir={run}")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [proc.stderr.strip()], proc.stderr[-2000:]
    assert "schedule.lr" in proc.stderr
    assert snapshot(tmp_path) == before


# flags that only print (Hydra's own commands): nothing written, not even the new run's dir; exit 0, but
# where Hydra itself fails (--resolve: output_dir names Hydra's runtime, which a printed config lacks)
SHOWS = ["--cfg job", "-c hydra", "--cfg job --package model", "--help", "--info config", "--version",
         "-cn config --cfg job", "--cfg job --resolve"]


@pytest.mark.parametrize("script,flag", [("invert.py", f) for f in [*SHOWS, "--hydra-help"]]
                         + [("train_invert.py", f) for f in SHOWS[:2]])
def test_a_flag_that_only_prints_writes_nothing(finished, tmp_path, script, flag):
    before = snapshot(finished.parent)
    new = tmp_path / "new"
    overrides = [] if flag == "--hydra-help" else TINY if script == "invert.py" else ["data=digits"]
    proc = run_cli(script, *flag.split(), *overrides, f"hydra.run.dir={new}", f"hydra.sweep.dir={new}")
    assert proc.returncode == (1 if "--resolve" in flag else 0), proc.stderr[-2000:]
    assert proc.stdout.strip() or "--resolve" in flag
    assert not new.exists() and list(tmp_path.iterdir()) == []
    assert snapshot(finished.parent) == before


@pytest.mark.parametrize("value", ["../../evil", "a/b", "/abs/path", ".hidden", "..", "x" * 300, "%2F", "${seed}"])
def test_a_sweep_value_never_takes_a_job_out_of_the_sweep_dir(tmp_path, value):
    """A job's folder is one path component inside the sweep dir: / is %2F, a leading . is %2E, a
    name too long is cut and ends in a hash; different values give different folders."""
    sweep_dir = tmp_path / "sweep"
    with planned(["-m", *TINY, f"method={sweep.quoted(value)},plain", f"hydra.sweep.dir={sweep_dir}"],
                 CONF_DIR, "config", check_invert_job) as plan:
        pass
    dirs = [job.dir for job in plan.jobs]
    assert len(set(dirs)) == 2
    for job_dir in dirs:
        assert job_dir.resolve().parent == sweep_dir.resolve()
        assert len(job_dir.name.encode()) <= 255 and not job_dir.name.startswith(".")
    assert not sweep_dir.exists()  # planned, nothing written


def test_a_swept_path_runs_inside_the_sweep_and_nowhere_else(tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("invert.py", "-m", *FAST, "method=../../evil,a/b", f"hydra.sweep.dir={sweep_dir}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]
    jobs = OmegaConf.load(sweep_dir / sweep.SUMMARY).jobs
    assert [j.state for j in jobs] == [sweep.FINISHED] * 2
    for job in jobs:
        assert Path(job.dir).parent == sweep_dir and (Path(job.dir) / "metrics.json").is_file()
    assert "method=..%2F..%2Fevil" in jobs[0].dir and "method=a%2Fb" in jobs[1].dir


def test_a_sweep_job_holds_its_directory_lock_while_it_runs(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    job_dir = tmp_path / "0_seed=0"
    job_dir.mkdir()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=TINY, return_hydra_config=True)
    with read_write(cfg):
        cfg.hydra.runtime.output_dir = str(job_dir)
    seen, checks = [], []

    def task(job_cfg):
        with pytest.raises(ConfigError, match="another run .* is writing into"):
            with files.locked(job_dir):
                pass
        seen.append(job_cfg.seed)
        return 1.0

    # a job the preflight did not plan (Optuna's) is checked where it runs, by the plan's check
    plan = Plan(cfg, True, {}, check=lambda job_cfg, overrides: checks.append(overrides) or copy.deepcopy(job_cfg))
    HydraConfig.instance().set_config(cfg)
    try:
        assert Checked(task, plan, lock=True)(cfg) == 1.0
        with files.locked(job_dir):  # a job whose dir another process holds fails alone, running nothing
            with pytest.raises(sweep.JobFailed, match="another run"):
                sweep.FailsAlone(Checked(task, plan, lock=True))(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert seen == [cfg.seed] and len(checks) == 1
    with files.locked(job_dir):  # released at the job's end
        pass


def test_resume_of_a_job_dir_while_its_lock_is_held_is_refused(tmp_path):
    """`resume=<job dir>` while the sweep runs that job: one line, exit 2, the job's files unchanged."""
    job_dir = tmp_path / "sweep" / "0_job"
    with stopped_after_stage(0), pytest.raises(KeyboardInterrupt):
        runner.run(as_hydra_run(tiny_cfg(job_dir, "verifier=none"), job_dir))
    before = snapshot(job_dir)
    with files.locked(job_dir):
        proc = run_cli("invert.py", f"resume={job_dir}")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    assert re.match(r"error: another run \(pid \d+\) is writing into", lines[0])
    assert snapshot(job_dir) == before


def test_sweep_json_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """A write past the file-size limit (EFBIG, as under `ulimit -f`) leaves the earlier sweep.json whole."""
    master = OmegaConf.create({"logger": {"_target_": "pii.run.tracking.NoTracker"}})
    jobs = [sweep.Job(0, ["seed=0"], tmp_path / "0_seed=0", sweep.FINISHED, None)]
    sweep.report(jobs, tmp_path, master)
    earlier = (tmp_path / sweep.SUMMARY).read_bytes()
    assert OmegaConf.create(earlier.decode()).finished == 1

    def too_large(fd):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(os, "fsync", too_large)
    jobs.append(sweep.Job(1, ["seed=1"], tmp_path / "1_seed=1", sweep.FINISHED, None))
    with pytest.raises(WriteError, match="File too large"):
        sweep.report(jobs, tmp_path, master)
    assert (tmp_path / sweep.SUMMARY).read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == [sweep.SUMMARY]


def test_sweep_json_under_a_file_size_limit_in_a_real_process(tmp_path):
    """The same with `ulimit -f` on a real interpreter: one line naming sweep.json, exit 2, no cut file."""
    (tmp_path / sweep.SUMMARY).write_text('{"jobs": [], "finished": 0, "not_finished": 0}\n')
    earlier = (tmp_path / sweep.SUMMARY).read_bytes()
    code = ("import sys; from pathlib import Path; from omegaconf import OmegaConf; from pii.run import sweep; "
            "from pii.run.cli import ending\n"
            f"d = Path({str(tmp_path)!r})\n"
            "jobs = [sweep.Job(i, [f'method={\"x\" * 400}'], d / str(i), sweep.FINISHED, None) for i in range(20)]\n"
            "with ending(): sweep.report(jobs, d, OmegaConf.create({'logger': {'_target_': 'none'}}))\n")

    def limit():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=cli_env({"PYTHONDONTWRITEBYTECODE": "1"}),
                          preexec_fn=limit,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and "sweep.json" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tmp_path / sweep.SUMMARY).read_bytes() == earlier
    assert sorted(p.name for p in tmp_path.iterdir()) == [sweep.SUMMARY]


def test_sigterm_to_a_joblib_sweep_prints_how_to_continue_it(tmp_path):
    sweep_dir = tmp_path / "sweep"
    slow = [a for a in TINY if not a.startswith("schedule.steps")] + ["schedule.steps=500"]
    proc = subprocess.Popen([sys.executable, "invert.py", "-m", "hydra/launcher=parallel", *slow, "seed=0,1",
                             f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 240
        while not list(sweep_dir.glob("*/invert.log")) and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert proc.poll() is None, "the sweep ended before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    said = out + err
    assert "interrupted" in said and f"resume={sweep_dir}" in said
    assert "Traceback" not in said


def test_hydra_private_api_is_reached_from_one_module_written_for_hydra_1_3():
    import hydra

    from pii.run import hydra_private

    assert hydra.__version__.startswith(hydra_private.HYDRA_VERSION + "."), (
        f"pii.run.hydra_private was written against hydra-core {hydra_private.HYDRA_VERSION}; this is "
        f"{hydra.__version__}: check the private names it uses, then its version")
    assert callable(hydra_private.BasicSweeper.split_arguments)
    assert callable(hydra_private.Hydra.create_main_hydra2) and callable(hydra_private.create_config_search_path)
    with hydra_private.initialized(CONF_DIR, "test", str(ROOT / "tests")) as loader:
        paths = [element.path for element in loader.get_search_path().config_search_path]
    assert paths.index(CONF_DIR) < paths.index(f"file://{ROOT / 'tests'}") < paths.index("structured://")
    for hook in ("on_run_start", "on_run_end", "on_multirun_start", "on_multirun_end"):
        assert callable(getattr(hydra_private.Callbacks, hook))
    args = hydra_private.args_parser().parse_args(["-cn", "x", "-cd", "d", "-m", "--cfg", "job", "a=1"])
    assert (args.config_name, args.config_dir, args.multirun, args.cfg, args.overrides) == ("x", "d", True, "job", ["a=1"])
    reaching = sorted({str(p.relative_to(ROOT)) for folder in ("pii", "hydra_plugins")
                       for p in (ROOT / folder).rglob("*.py") if "hydra._internal" in p.read_text()})
    assert reaching == ["pii/run/hydra_private.py"]


def test_the_runner_trusts_the_preflight_and_checks_when_called_directly(tmp_path, monkeypatch):
    """One check per path: the preflight's checked config runs as it is (run_checked); run(cfg) checks it."""
    from pii.run import checks

    calls = []
    real = checks.check_invert_job
    monkeypatch.setattr(runner, "check_invert_job", lambda cfg, overrides=None: calls.append(1) or real(cfg, overrides))
    cfg = compose_config([*FAST, f"output_dir={tmp_path / 'a'}", "schedule.lr=-1"])
    with pytest.raises(ConfigError, match="schedule.lr"):
        runner.run(cfg)
    assert calls == [1] and not (tmp_path / "a").exists()
    runner.run_checked(compose_config([*FAST, f"output_dir={tmp_path / 'b'}"]))
    assert calls == [1] and (tmp_path / "b" / "metrics.json").is_file()
