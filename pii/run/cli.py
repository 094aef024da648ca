"""Hydra entry points and the scripts' main. They stay thin: compose and check the config, claim the
run's directory, call a pure function; and they end in one way (`ending`): bad input or a refused
write is one line on stderr and exit code 2, Ctrl-C or SIGTERM one line and exit code 130."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pii import CONF_DIR, files
from pii.errors import ConfigError, WriteError, few
from pii.eval.results import RunResult
from pii.run.compose import hydra_arg, one_line, quoted, renamed
from pii.run.config import check_invert, check_stages

log = logging.getLogger(__name__)


@contextmanager
def signals() -> Iterator[None]:
    """While inside, SIGTERM (kill, SLURM's time limit) unwinds like Ctrl-C, so `finally` blocks run:
    W&B is finished, finished stages stay on disk. SIGXFSZ (a write past the file-size limit) is
    ignored, so that write fails with an OSError, reported like a full disk, instead of killing us."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    try:
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, interrupt)
        previous[signal.SIGXFSZ] = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    except ValueError:  # not the main thread: leave the defaults
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextmanager
def ending(hint: str = "") -> Iterator[None]:
    """How every entry point and script ends short, never with a traceback: a ConfigError (bad input,
    a refused write) or an OSError (a file or directory the system refuses) is one line and exit
    code 2; Ctrl-C or SIGTERM is one line and exit code 130. `hint` (how to continue: resume=...)
    follows an interruption and a refused write, after which the earlier files are still whole."""
    logging.raiseExceptions = False  # a log file on a full disk drops the record instead of printing a traceback
    with signals():
        try:
            yield
        except WriteError as err:
            fail(ConfigError(f"{err}; {hint}" if hint else str(err)))
        except ConfigError as err:
            fail(err)
        except OSError as err:
            fail(ConfigError(f"{err.strerror or type(err).__name__}: {err.filename!r}" if err.filename else str(err)))
        except KeyboardInterrupt:
            message = f"interrupted; {hint}" if hint else "interrupted"
            if logging.getLogger().handlers:  # inside a run: its console and its log file
                log.warning(message)
            else:
                print(message, file=sys.stderr)
            sys.exit(130)


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
    are named in one ConfigError. Returns the config (of a sweep: its hydra.sweep.dir is what
    counts), or None for Hydra's own flags, --help, --cfg, ..., which are left to Hydra.
    """
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return None
    renamed(argv)
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
                return cfg
            sweeper = cfg.hydra.sweeper._target_
            if not sweeper.endswith((".BasicSweeper", ".JobSweeper")):
                check(cfg, task)  # Optuna and the like draw each job's values as they go: check the rest
                return cfg
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
        raise ConfigError(f"{len(bad)} of the sweep's {len(jobs)} jobs are bad, so none was run: {few(bad, 2, '; ')}")
    return cfg


def pin(key: str, value: str) -> None:
    """Set `key=value` (as Hydra's grammar reads it) on the command line Hydra will read, replacing the
    user's: e.g. the output directory the preflight resolved, which Hydra would resolve again (${now:}
    a second later)."""
    sys.argv[1:] = [a for a in sys.argv[1:] if not a.startswith(f"{key}=")] + [f"{key}={value}"]


def launch(cfg: DictConfig, app: Callable[[], object], resume_hint: Callable[[str], str] | None = None,
           continuing: bool = False) -> None:
    """Run the Hydra `app` in the directory `cfg` names (hydra.run.dir, or a sweep's hydra.sweep.dir),
    made and locked here (`run_directory`). `continuing`: a resumed run, in the directory that holds
    it; its .hydra/ (what resume reads) is kept as the run was started."""
    multirun = any(a in ("-m", "--multirun") for a in sys.argv[1:])
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    directory = str(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
    pin(key, quoted(directory))
    if continuing and not multirun:  # a sweep's jobs keep their own .hydra/ (pii.run.sweep continues them)
        pin("hydra.output_subdir", "null")
    with run_directory(directory, key, None if multirun else resume_hint, continuing):
        app()


@contextmanager
def run_directory(directory: str, key: str, resume_hint: Callable[[str], str] | None = None,
                  continuing: bool = False) -> Iterator[Path]:
    """Make `directory` and hold its lock (pii.files.locked) while inside, so that a second run
    started into it is refused; unless `continuing`, refuse a directory that already holds files,
    pointing at `resume_hint(directory)` where it holds a run. A refused start leaves nothing: the
    directories made here are removed again if they stay empty."""
    path = Path(directory).expanduser().absolute()
    made: list[Path] = []
    try:
        with ExitStack() as stack:
            try:
                for parent in [*reversed(path.parents), path]:
                    if not parent.exists():
                        with suppress(FileExistsError):  # another run made it this instant: not ours to remove
                            parent.mkdir()
                            made.append(parent)
                if not path.is_dir():
                    raise ConfigError(f"{key}={path} is not a directory; choose another with {key}=...")
                stack.enter_context(files.locked(path))
                held = sorted(p.name for p in path.iterdir() if p.name != files.LOCK)
            except (OSError, WriteError) as err:
                reason = err.reason if isinstance(err, WriteError) else f"{err.strerror}: {err.filename}"
                raise ConfigError(f"cannot write into {key}={path} ({reason}); choose another with {key}=...") from None
            if held and not continuing:
                if resume_hint and (path / ".hydra" / "config.yaml").is_file():
                    raise ConfigError(f"{key}={path} already holds a run; continue it with {resume_hint(str(path))}, "
                                      f"or start a new one in a new directory ({key}=...)")
                raise ConfigError(f"{key}={path} is not empty (it holds {few(held)}); a new run needs a new "
                                  f"directory: {key}=...")
            yield path
    finally:
        for parent in reversed(made):
            with suppress(OSError):
                parent.rmdir()  # only if empty: a refused or failed start leaves no directory behind


def check_invert_job(cfg: DictConfig, overrides: list[str]) -> None:
    """Preflight of one invert.py job (types are the schema's by now): ranges and choices; then what
    needs timm but no model (the stage sizes); then every file it names (resume='s checkpoint,
    init_from='s images, weights of the model and of each judge, param.spectrum), read, so that a bad
    one fails before Hydra makes the run's directory. A command line with a typo fails before torch
    is imported."""
    if cfg.get("resume"):
        from pii.run.resume import resumed_config

        cfg = resumed_config(cfg, overrides)
    check_invert(cfg)
    from pii.models.device import available_device
    from pii.run import build

    check_stages(cfg, [stage.size for stage in build.stages(cfg)])
    available_device(str(cfg.device))
    if cfg.get("resume") or cfg.get("init_from"):
        from pii.run.resume import check_files

        check_files(cfg)
    from pii.models.weights import check_weights

    check_weights(cfg.model.get("weights"), "model.weights")
    for name, judge in (cfg.get("verifier") or {}).items():
        check_weights(judge.get("weights"), f"verifier.{name}.weights")
    if cfg.get("param") is not None and cfg.param.get("spectrum"):
        from pii.core.param import load_spectrum

        load_spectrum(str(cfg.param.spectrum))
    from pii.run import tracking

    tracking.builder(cfg.logger)


def invert_main() -> None:
    """`python invert.py ...` / `pii-invert`: preflight, claim the run's directory, then the Hydra app."""
    from pii.run.sweep import register_plugins

    register_plugins()
    with ending():
        cfg = preflight(sys.argv[1:], CONF_DIR, "config", check_invert_job)
        if cfg is None:
            return _invert_main()
        if not cfg.get("resume"):
            return launch(cfg, _invert_main, resume_hint=lambda d: hydra_arg("resume", d))
        if any(a in ("-m", "--multirun") for a in sys.argv[1:]):  # resume=<sweep dir> (pii.run.sweep)
            return launch(cfg, _invert_main, continuing=True)
        # A resumed run logs into its own directory (appending to invert.log) and keeps the .hydra/
        # of the run it continues: that config is what resume= reads.
        run_dir = str(Path(str(cfg.resume)).expanduser().absolute())
        given = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("hydra.run.dir=")]
        if given and Path(given[-1].strip("'\"")).expanduser().absolute() != Path(run_dir):
            raise ConfigError(f"resume= writes into the run it continues ({run_dir}); drop hydra.run.dir=...")
        from pii.run.resume import finished_result

        with run_directory(run_dir, "resume", continuing=True):
            if finished_result(Path(run_dir)) is not None:  # resuming a finished run changes nothing
                print(f"{run_dir} is a finished run (metrics.json is there); nothing to resume", file=sys.stderr)
                return
            pin("hydra.run.dir", quoted(run_dir))
            pin("hydra.output_subdir", "null")
            _invert_main()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _invert_main(cfg: DictConfig) -> float:
    from pii.run.runner import run

    out = str(cfg.get("resume") or cfg.output_dir)
    with ending(f"finished stages are saved; continue with: python invert.py {hydra_arg('resume', out)}"):
        result = run(cfg)
    return sweep_metric(result, cfg.sweep_metric)


def sweep_metric(result: RunResult, name: str) -> float:
    """What a sweeper optimises (`sweep_metric=`): the first judge's top-1, the judged number (without
    a judge, verifier=none: the inverted model's own top-1 rate); or that per second of inversion."""
    judges = list((result.judge or {}).values())
    top1 = judges[0].top1 if judges else result.top1_rate
    return top1 / result.seconds if name == "judged_top1_per_second" else top1


def script_main(main: Callable[[list[str]], int | None]) -> None:
    """Run a scripts/ entry point: log to the console, end as every entry point does (`ending`); the
    exit code is what `main` returns (None: 0)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    with ending():
        code = main(sys.argv[1:])
    sys.exit(code or 0)


def writable_directory(path: str | os.PathLike, option: str) -> Path:
    """A script's output directory (--out): made now, so that a name the system refuses fails before
    the work, in one line naming `option`."""
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{option} {str(path)!r} cannot be used ({err.strerror}: {err.filename})") from None
    return path
