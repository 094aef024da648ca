"""The jobs of a sweep (`invert.py -m`), on any Hydra launcher: one machine, SLURM or a Ray cluster.

The default `hydra/sweeper` of invert.py (pii: hydra_plugins/pii/sweeper.py's JobSweeper, which runs
`run`) is Hydra's basic sweeper (every combination of the swept values) with what a sweep on a
cluster needs besides (docs/cluster.md):

- `classes_per_job=N` cuts each job's class list into chunks of N classes, one job per chunk
  (`class_chunk=0,1,...`): the number of jobs comes from the list;
- a job that fails fails alone: its siblings run to their end. The sweep's summary (the log, and
  `sweep.json` in the sweep dir) names every job that did not finish, and the sweep exits 1;
- `resume=<sweep dir>` on the sweep's own command line continues it: finished jobs are skipped,
  started ones continue after their last finished stage (`resume=<job dir>`), the rest start.

`plan` is the one place that turns a command line into jobs: the entry point's preflight checks
the same jobs before anything runs. This module imports no torch (Hydra imports it, through the
plugin, whenever it starts), nor Hydra's sweeper classes, which Hydra's plugin scan defines anew.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pii import files
from pii.errors import ConfigError
from pii.run.compose import hydra_arg, one_line, override_key, quoted, sweep_jobs

log = logging.getLogger(__name__)

SUMMARY = "sweep.json"  # in the sweep dir: each job's number, dir, overrides and state
MULTIRUN = "multirun.yaml"  # Hydra's record of the sweep's config and command line

# A job's state, on disk
NEW, STARTED, FINISHED = "not started", "started", "finished"
# after the sweep, besides FINISHED
FAILED, INTERRUPTED = "failed", "interrupted"


class JobFailed(Exception):
    """A job of a sweep stopped with an error (the job's log holds it); its siblings go on."""


class JobInterrupted(JobFailed):
    """A job of a sweep was stopped (SIGTERM: a SLURM time limit, kill); its finished stages are saved."""


@dataclass
class Job:
    number: int
    overrides: list[str]  # what the launcher gets
    dir: Path
    state: str  # on disk, before the sweep runs it
    config: DictConfig | None  # composed from `overrides` (without Hydra's runtime values); None: it cannot be
    error: str | None = None  # why it cannot be composed; after the sweep, why it did not finish


def register_plugins() -> None:
    """Make pii's Hydra plugins (the sweeper; hydra/launcher=ray) known where Hydra's scan of the
    `hydra_plugins` package cannot list them: an editable install reaches them through an import hook,
    not a folder. Importing them stores their configs; registering lets Hydra instantiate them. The
    scan comes first: it runs again the modules it lists, Hydra's basic sweeper among them, and a
    plugin class must derive from the sweeper class that is there after it."""
    from hydra.core.plugins import Plugins

    plugins = Plugins.instance()
    from hydra_plugins.pii import ray_launcher, sweeper

    for plugin in (sweeper.JobSweeper, getattr(ray_launcher, "RayLauncher", None)):
        if plugin is not None:
            plugins.register(plugin)


def state(job_dir: Path) -> str:
    """A job's state from what it left: metrics.json (written last) or its Hydra record."""
    from pii.eval.results import METRICS

    try:
        if (job_dir / METRICS).is_file():
            return FINISHED
        return STARTED if (job_dir / ".hydra" / "config.yaml").is_file() else NEW
    except OSError:  # a name the file system refuses (too long): the job could not start
        return NEW


def continue_in(master: DictConfig, sweep_dir: Path, arguments: list[str]) -> None:
    """`-m ... resume=<sweep dir>`: the jobs go to that sweep's dir; its command line must be this one
    (less resume=, and the keys a resumed run may change), so that the jobs are the same."""
    from pii.run.resume import RESUME_MAY_CHANGE

    record = sweep_dir / MULTIRUN
    if not record.is_file():
        raise ConfigError(f"resume={sweep_dir}: there is no {MULTIRUN} there; with -m, pass the directory of an "
                          f"earlier sweep (without -m, of an earlier run)")

    def what(overrides) -> set[str]:
        return {o for o in overrides if override_key(o) != "resume" and override_key(o).split(".")[0] not in
                RESUME_MAY_CHANGE}

    before = list(OmegaConf.load(record).hydra.overrides.task)
    if what(before) != what(arguments):
        raise ConfigError(f"resume={sweep_dir} continues the sweep of the same command line: "
                          f"{' '.join(shlex.quote(o) for o in before)} (only "
                          f"{', '.join(RESUME_MAY_CHANGE)} may change)")
    with read_write(master.hydra), open_dict(master.hydra):
        master.hydra.sweep.dir = str(sweep_dir)
        # each job's config is composed from these (Hydra's load_sweep_config): it names the same dir
        master.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(str(sweep_dir))}")


def plan(loader, master: DictConfig, arguments: list[str], extended: bool = True) -> list[Job]:
    """Every job of the sweep that `master` (the composed multirun config) and its command line's
    `arguments` describe, in order: the product of the swept values (hydra.sweeper.params, then the
    command line) as Hydra's basic sweeper makes it; `extended` (JobSweeper), each cut into class
    chunks with classes_per_job, and with resume=<sweep dir> what each needs to continue.
    A job that cannot be composed has its one-line `error` (the checks name every such job)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from pii.models.classes import class_chunks, parse_class_ids

    check_launcher(master)
    resume = master.get("resume") if extended else None
    sweep_dir = Path(str(resume)).expanduser() if resume else None
    if sweep_dir is not None:
        continue_in(master, sweep_dir, arguments)
    params = [f"{k}={v}" for k, v in (master.hydra.sweeper.get("params") or {}).items()]
    swept = [a for a in arguments if not (extended and override_key(a) == "resume")]
    jobs: list[Job] = []
    for base in sweep_jobs(loader, params + swept):
        try:
            cfg = loader.load_sweep_config(master, base)
            per_job = cfg.get("classes_per_job") if extended else None
            if per_job is None or cfg.get("class_chunk") is not None:
                variants = [base]
            else:
                ids = parse_class_ids(cfg.class_id, int(cfg.model.num_classes))
                variants = [[*base, f"class_chunk={k}"] for k in range(len(class_chunks(ids, per_job)))]
            for overrides in variants:
                cfg = cfg if overrides is base else loader.load_sweep_config(master, overrides)
                jobs.append(_job(loader, master, len(jobs), overrides, cfg, sweep_dir is not None))
        except (ConfigError, HydraException, OmegaConfBaseException) as err:
            jobs.append(Job(len(jobs), base, Path(), NEW, None,
                            str(err) if isinstance(err, ConfigError) else one_line(err)))
    return jobs


def _job(loader, master: DictConfig, number: int, overrides: list[str], cfg: DictConfig, resuming: bool) -> Job:
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.job.num = number
    subdir = job_subdir(str(cfg.hydra.sweep.subdir))
    sweep_dir = Path(str(cfg.hydra.sweep.dir))
    job_dir = sweep_dir / subdir
    if job_dir.resolve().parent != sweep_dir.resolve():
        raise ConfigError(f"its directory {str(job_dir)!r} would not be a folder of the sweep's {str(sweep_dir)!r}")
    now = state(job_dir)
    # every job names its dir: the one planned (and checked) here, whatever number a launcher gives it
    extra = [f"hydra.sweep.subdir={quoted(subdir)}"]
    if not (resuming and now == STARTED):
        return Job(number, [*overrides, *extra], job_dir, now, cfg)
    # continue it in place, keeping the .hydra/ that resume= reads
    overrides = [*overrides, *extra, f"resume={quoted(str(job_dir))}", "hydra.output_subdir=null"]
    return Job(number, overrides, job_dir, now, loader.load_sweep_config(master, overrides))


NAME_MAX = 255  # bytes in one path component (Linux, macOS)


def job_subdir(subdir: str) -> str:
    """A job's folder name (hydra.sweep.subdir, by default its number and its overrides `key=value,...`)
    as one path component inside the sweep dir, whatever the values hold: `/` is written %2F (and `%`
    %25), a leading `.` %2E, and a name too long for the file system is cut and ends in a hash of the
    whole. So `init_from=/runs/a` or `x=../..` stay in the sweep's own folder."""
    name = subdir.replace("%", "%25").replace("/", "%2F").replace("\0", "%00").replace("$", "%24")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode()) > NAME_MAX:
        digest = hashlib.sha256(subdir.encode()).hexdigest()[:16]
        name = name.encode()[:NAME_MAX - len(digest) - 1].decode(errors="ignore") + "-" + digest
    return name


def check_launcher(master: DictConfig) -> None:
    """A launcher whose plugin is not installed (hydra/launcher=ray without the extra): one line."""
    import importlib

    target = str(OmegaConf.select(master, "hydra.launcher._target_", default="") or "")
    module, _, name = target.rpartition(".")
    try:
        getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        extra = " (pip install -e '.[ray]')" if "ray" in target else ""
        raise ConfigError(f"the launcher {target!r} is not installed{extra}") from None


class FailsAlone:
    """The task function of a sweep's job: an error or a SIGTERM ends the job, not the sweep.

    The entry point turns a ConfigError into exit code 2 and an interrupt into exit code 130
    (pii.run.cli); in a sweep they become exceptions, which Hydra records as the job's failure, so
    that the launcher goes on with the other jobs. Ctrl-C still stops a sweep whose jobs run in its
    own process (Hydra's basic launcher)."""

    def __init__(self, task):
        self.task = task
        self.sweep_pid = os.getpid()

    def __call__(self, cfg: DictConfig) -> Any:
        try:
            return self.task(cfg)
        except ConfigError as err:  # the job's lock is another process's (pii.run.cli.Checked)
            raise JobFailed(str(err)) from None
        except SystemExit as stop:
            if stop.code in (0, None):
                raise
            reason = stop.__context__
            if isinstance(reason, KeyboardInterrupt):
                if os.getpid() == self.sweep_pid:
                    raise
                raise JobInterrupted(f"interrupted ({reason or 'Ctrl-C'}); finished stages are saved") from None
            raise JobFailed(str(reason) if reason is not None else f"exit code {stop.code}") from None
        except Exception:
            log.exception("the job failed")  # into the job's log, where Hydra's record of it says only its type
            raise


def run(launcher, loader, master: DictConfig, arguments: list[str], max_batch_size: int | None = None,
        jobs: list[Job] | None = None) -> list:
    """The sweep (hydra_plugins/pii/sweeper.py's JobSweeper.sweep): its `jobs` (as the entry point's
    preflight planned them; None: plan them here), the finished ones skipped, the rest given to `launcher`
    (max_batch_size at once; None: all), then `report`. Returns Hydra's records of the jobs that came
    back, by batch."""
    jobs = plan(loader, master, list(arguments)) if jobs is None else jobs
    bad = [f"job {job.number} ({' '.join(job.overrides)}): {job.error}" for job in jobs if job.error]
    if bad:  # the entry point's preflight says so first; a caller that skipped it
        raise ConfigError("; ".join(bad))
    sweep_dir = Path(str(master.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if not master.get("resume"):
        files.write_text(sweep_dir / MULTIRUN, OmegaConf.to_yaml(master))
    skipped = [job.number for job in jobs if job.state == FINISHED]
    if skipped:
        log.info("resume: finished jobs skipped: %s", ", ".join(map(str, skipped)))
    todo = [job for job in jobs if job.state != FINISHED]
    size = max_batch_size or len(todo) or 1
    returns: list[list[JobReturn]] = []
    for start in range(0, len(todo), size):
        batch = todo[start:start + size]
        lost = None
        try:
            results = list(launcher.launch([job.overrides for job in batch], initial_job_idx=batch[0].number))
        except Exception as err:  # a lost worker, a refused submission: the jobs' dirs tell the rest
            lost = f"the launcher stopped: {type(err).__name__}: {one_line(err)}"
            log.error(lost)
            results = [None] * len(batch)
        for job, result in zip(batch, results):
            job.state, job.error = outcome(job, result, lost)
        returns.append([r for r in results if r is not None])
    report(jobs, sweep_dir, master)
    return returns


def outcome(job: Job, result: JobReturn | None, lost: str | None = None) -> tuple[str, str | None]:
    """A launched job's state and error: from Hydra's record of it, else (the launcher failed: `lost`)
    from its dir."""
    if result is not None and result.status == JobStatus.COMPLETED:
        return FINISHED, None
    if result is not None and result.status == JobStatus.FAILED:
        err = result._return_value
        kind = INTERRUPTED if isinstance(err, JobInterrupted) else FAILED
        return kind, str(err) if isinstance(err, JobFailed) else f"{type(err).__name__}: {err}"
    now = state(job.dir)
    if now == FINISHED:
        return FINISHED, None
    if now == NEW:
        return NEW, lost
    return INTERRUPTED if (job.dir / "checkpoint.pt").is_file() else FAILED, lost


def report(jobs: list[Job], sweep_dir: Path, master: DictConfig) -> None:
    """The sweep's summary: sweep.json, one log line per job that did not finish, then W&B's summary
    of the class lists split into jobs; exit code 1 with one line if a job did not finish."""
    rows = [{"job": job.number, "dir": str(job.dir), "overrides": [o for o in job.overrides if not
             o.startswith("hydra.")], "state": job.state, **({"error": job.error} if job.error else {})}
            for job in jobs]
    bad = [job for job in jobs if job.state != FINISHED]
    files.write_json(sweep_dir / SUMMARY, {"jobs": rows, "finished": len(jobs) - len(bad), "not_finished": len(bad)})
    log.info("sweep %s: %d of %d jobs finished", sweep_dir, len(jobs) - len(bad), len(jobs))
    for job in bad:
        log.error("job %d %s: %s (%s)", job.number, job.state, job.error, job.dir)
    if len(bad) < len(jobs):
        log_gathered(sweep_dir, master)
    if bad:
        alike: dict[tuple[str, str | None], list[str]] = {}
        for job in bad:
            alike.setdefault((job.state, job.error), []).append(str(job.number))
        names = "; ".join(f"job{'s' if len(numbers) > 1 else ''} {', '.join(numbers)} {kind}"
                          + (f": {error}" if error else "") for (kind, error), numbers in alike.items())
        print(f"error: {len(bad)} of the sweep's {len(jobs)} jobs did not finish ({names}); the others' results are "
              f"in {sweep_dir} ({SUMMARY}); continue it with: {continue_command(sweep_dir)}", file=sys.stderr)
        sys.exit(1)


def continue_command(sweep_dir: Path | str) -> str:
    """The command that continues the sweep in `sweep_dir`: this one, with resume=<sweep dir>."""
    again = [shlex.quote(a) for a in sys.argv[1:] if override_key(a) != "resume"]
    return f"python {Path(sys.argv[0]).name} {' '.join(again)} {hydra_arg('resume', str(sweep_dir))}"


def log_gathered(sweep_dir: Path, master: DictConfig) -> None:
    """logger=wandb: each class list that the sweep split into jobs, once all its jobs finished, as one
    W&B run in the sweep's group: every class's image and verdicts in one table, the summary over all."""
    if not str(OmegaConf.select(master, "logger._target_")).endswith("WandbTracker"):
        return
    from pii.eval.gallery import collect

    for number, job in enumerate(j for j in collect(sweep_dir) if j.result and j.result.config.get("classes_per_job")):
        ids = [e.class_id for e in job.result.classes]
        wanted = job.result.config["class_id"]
        if sorted(ids) != sorted(wanted if isinstance(wanted, list) else [wanted]):
            continue  # not all its chunks finished: logged when a resumed sweep finishes them
        _log_run(sweep_dir, job.result, f"all_classes_{number}" if number else "all_classes")


def _log_run(sweep_dir: Path, result, name: str) -> None:
    import torch

    from pii.files import read_png
    from pii.run import tracking

    cfg = OmegaConf.create(result.config)
    out_dir = sweep_dir / name
    out_dir.mkdir(exist_ok=True)
    with open_dict(cfg):  # logged again (a resumed sweep): the same W&B run, from the id kept in out_dir
        cfg.resume = str(out_dir) if (out_dir / tracking.RUN_ID_FILE).is_file() else None
    with tracking.opened(cfg, out_dir, job_type="sweep", job_name=name, job_group=sweep_dir.name) as tracker:
        tracker.watch_inversion([e.class_id for e in result.classes], int(cfg.model.num_classes), [])
        tracker.log_results(torch.stack([read_png(Path(e.image)) for e in result.classes]), result)
