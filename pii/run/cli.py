"""Hydra entry points. They stay thin: compose the config, call a pure
function, and turn a ConfigError into one line and exit code 2."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pii import CONF_DIR
from pii.errors import ConfigError
from pii.eval.results import RunResult
from pii.run.compose import one_line, quoted, resume_argument
from pii.run.config import check_invert

log = logging.getLogger(__name__)


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM (kill, SLURM's time limit) unwinds like Ctrl-C, so
    `finally` blocks run: W&B is finished, finished stages stay on disk."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave the default
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail(err: ConfigError) -> None:
    """One line on stderr and exit code 2. Inside a Hydra job the line also goes to the job's log
    file (its console handler would print it a second time), so a failed run's log says why."""
    message = f"error: {err}"
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.emit(logging.LogRecord("pii", logging.ERROR, __file__, 0, message, None, None))
    print(message, file=sys.stderr)
    sys.exit(2)


def preflight(argv: list[str], config_dir: str, config_name: str,
              check: Callable[[DictConfig, list[str]], None]) -> DictConfig | None:
    """Compose and check every job this command line would run, before Hydra writes anything.

    Hydra reports a bad override with several lines and exit code 1, after it has made the run's
    directory; and a sweep would stop at its first bad job. So the entry points compose here
    first: types (the schema), then `check(job_config, job_overrides)`; all bad jobs of a sweep
    are named in one ConfigError. Returns the single run's config (None for a sweep or for
    Hydra's own flags, --help, --cfg, ..., which are left to Hydra).
    """
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return None
    multirun = any(a in ("-m", "--multirun") for a in argv)
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals
    from hydra.types import RunMode

    setup_globals()  # the ${now:} resolver of the output directory
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        try:
            cfg = loader.load_configuration(config_name, [a for a in argv if not a.startswith("-")],
                                            run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
            task = list(cfg.hydra.overrides.task)
            if not multirun:
                check(cfg, task)
                check_writable(str(cfg.get("resume") or cfg.hydra.run.dir))
                return cfg
            check_writable(cfg.hydra.sweep.dir)
            sweeper = cfg.hydra.sweeper._target_
            if not sweeper.endswith((".BasicSweeper", ".JobSweeper")):
                check(cfg, task)  # Optuna and the like draw each job's values as they go: check the rest
                return None
            from pii.run.sweep import plan

            jobs = plan(loader, cfg, task, extended=sweeper.endswith(".JobSweeper"))
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(one_line(err)) from None
        bad = []
        for job in jobs:
            try:
                if job.error:
                    raise ConfigError(job.error)
                check(job.config, job.overrides)
            except (ConfigError, HydraException, OmegaConfBaseException) as err:
                bad.append(f"job {job.number} ({' '.join(job.overrides)}): "
                           f"{err if isinstance(err, ConfigError) else one_line(err)}")
    if bad:
        raise ConfigError(f"{len(bad)} of the sweep's {len(jobs)} jobs are bad, so none was run: {'; '.join(bad)}")
    return None


def check_writable(directory: str) -> None:
    """Hydra makes the output directory and opens its log file there: say so if it cannot."""
    path = Path(directory).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the output directory {str(path)!r} ({str(existing)!r} is not a writable "
                          f"directory); choose another with hydra.run.dir=... (sweeps: hydra.sweep.dir=...)")


def check_invert_job(cfg: DictConfig, overrides: list[str]) -> None:
    """Preflight of one invert.py job (types are the schema's by now): ranges and choices, then
    the files it starts from, so that a bad one fails before Hydra makes the run's directory.
    torch is imported only for a job that names such files."""
    if cfg.get("resume"):
        from pii.run.resume import resumed_config

        cfg = resumed_config(cfg, overrides)
    check_invert(cfg)
    if cfg.get("resume") or cfg.get("init_from"):
        from pii.run.resume import check_files

        check_files(cfg)
    weights = cfg.model.get("weights")
    if weights not in (None, "random", "pretrained"):
        from pii.models.weights import resolve_weights

        resolve_weights(str(weights))


def invert_main() -> None:
    """`python invert.py ...` / `pii-invert`: preflight, then the Hydra app."""
    from pii.run.sweep import register_plugins

    register_plugins()
    try:
        cfg = preflight(sys.argv[1:], CONF_DIR, "config", check_invert_job)
    except ConfigError as err:
        fail(err)
    if cfg is not None and cfg.get("resume") and not any(a.startswith("hydra.run.dir=") for a in sys.argv):
        # A resumed run logs into its own directory (appending to invert.log) and keeps the
        # .hydra/ of the run it continues: that config is what resume= reads.
        sys.argv += [f"hydra.run.dir={quoted(str(cfg.resume))}", "hydra.output_subdir=null"]
    _invert_main()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _invert_main(cfg: DictConfig) -> float:
    from pii.run.runner import run

    try:
        with sigterm_as_interrupt():
            result = run(cfg)
    except ConfigError as err:
        fail(err)
    except KeyboardInterrupt:
        log.warning("interrupted; finished stages are saved; continue with: python invert.py %s",
                    resume_argument(str(cfg.get("resume") or cfg.output_dir)))
        sys.exit(130)
    return objective(result, cfg.objective)


def objective(result: RunResult, name: str = "judged_top1") -> float:
    """What a sweeper optimises (`objective=`): the first judge's top-1, the judged number (without
    a judge, verifier=none: the inverted model's own top-1 rate); or that per second of inversion."""
    judges = list((result.judge or {}).values())
    top1 = judges[0].top1 if judges else result.top1_rate
    return top1 / result.seconds if name == "judged_top1_per_second" else top1


def script_main(main) -> None:
    """Run a scripts/ entry point: log to the console; a ConfigError is one line and exit code 2."""
    import logging

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    try:
        main(sys.argv[1:])
    except ConfigError as err:
        fail(err)
