"""Hydra entry points and the scripts' main. They stay thin: compose and check the config, claim the
run's directory, call a pure function; and they end in one way (`ending`): bad input or a refused
write is one line on stderr and exit code 2, Ctrl-C or SIGTERM one line and exit code 130."""

from __future__ import annotations

import argparse
import copy
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import hydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

from pii import CONF_DIR, files
from pii.errors import ConfigError, WriteError, few
from pii.eval.results import RunResult
from pii.run.checks import check_invert_job
from pii.run.compose import hydra_arg, one_line, override_key, quoted, renamed

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


# Hydra's commands that print and write nothing (--version prints while the flags are read): left to Hydra.
SHOWS = ("help", "hydra_help", "cfg", "info", "shell_completion")


def command_line(argv: list[str]) -> argparse.Namespace:
    """`argv` read by Hydra's own parser, as `@hydra.main` reads it; a flag that Hydra does not know,
    or one that would run past the preflight, is a ConfigError (docs/errors.md, "Hydra's flags")."""
    from pii.run.hydra_private import args_parser

    parser = args_parser()

    def refuse(message: str):
        raise ConfigError(f"{message} (--help lists the flags)")

    parser.error = refuse
    args = parser.parse_args(argv)
    commands = [flag for flag, on in (("--run", args.run), ("--multirun", args.multirun), ("--cfg", args.cfg),
                                      ("--info", args.info), ("--shell-completion", args.shell_completion)) if on]
    if len(commands) > 1:
        raise ConfigError(f"{' and '.join(commands)} exclude each other: give one of --run, --multirun (-m), --cfg, "
                          f"--info, --shell-completion")
    if (args.resolve or args.package) and not (args.cfg or args.help):
        raise ConfigError("--resolve and --package go with --cfg (e.g. --cfg job --resolve): they print a config")
    if any(getattr(args, name) for name in SHOWS):
        return args
    if args.experimental_rerun:
        raise ConfigError("--experimental-rerun would run again into a run's directory: start a new run with its "
                          "overrides, or continue it with resume=<its dir>")
    if args.config_path:
        raise ConfigError(f"--config-path {args.config_path!r}: the configs are conf/; add a directory of your own "
                          f"configs with --config-dir <dir> (searched after conf/), and pick one with --config-name")
    if any(override_key(o) == "hydra.mode" for o in args.overrides):
        raise ConfigError("hydra.mode= is set by the flags: -m (--multirun) starts a sweep, no flag a run")
    if args.config_dir is not None and not Path(args.config_dir).expanduser().is_dir():
        raise ConfigError(f"--config-dir {args.config_dir!r} is not a directory")
    return args


@dataclass
class Plan:
    """What a command line runs, composed and checked once (`preflight`), then run as it is (`launch`)."""

    cfg: DictConfig  # a run's config, or a sweep's master config
    multirun: bool
    checked: dict[tuple[str, ...], DictConfig]  # each planned job's checked config, by its overrides
    jobs: list | None = None  # a sweep's jobs, as pii.run.sweep planned them (invert.py's JobSweeper)
    loader: Any = None  # Hydra's config loader, which composes a sweep's jobs again where they run
    overrides: list[str] = field(default_factory=list)  # the command line's
    check: Callable[[DictConfig, list[str]], DictConfig] | None = None  # what checked them; checks an unplanned job

    @property
    def key(self) -> str:
        return "hydra.sweep.dir" if self.multirun else "hydra.run.dir"

    @property
    def directory(self) -> str:
        """The run's (or the sweep's) directory, ${now:} resolved once, here."""
        return str(OmegaConf.select(self.cfg, self.key))


@contextmanager
def planned(argv: list[str], config_dir: str, config_name: str, check: Callable[[DictConfig, list[str]], DictConfig],
            searchpath: tuple[str, ...] = ()) -> Iterator[Plan | None]:
    """Inside, the Plan of `argv` (Hydra's config loader kept for its run); None for Hydra's commands that
    only print (--help, --cfg, --info, ...), which are left to Hydra. `searchpath`: config directories
    searched after `config_dir` unless the command line names its own (hydra.searchpath=...)."""
    from hydra.core.utils import setup_globals

    from pii.run.hydra_private import initialized

    args = command_line(argv)
    if any(getattr(args, name) for name in SHOWS):
        yield None
        return
    multirun = bool(args.multirun)
    overrides = list(args.overrides)
    renamed(overrides)
    if searchpath and not any(override_key(o) == "hydra.searchpath" for o in overrides):
        overrides.append(f"hydra.searchpath=[{','.join(quoted('file://' + d) for d in searchpath)}]")
    overrides.append(f"hydra.mode={'MULTIRUN' if multirun else 'RUN'}")
    setup_globals()  # the ${now:} resolver of the output directory
    extra = str(Path(args.config_dir).expanduser().absolute()) if args.config_dir else None
    with initialized(config_dir, Path(sys.argv[0]).stem or "pii", extra) as loader:
        yield preflight_plan(loader, args.config_name or config_name, overrides, multirun, check)


def preflight(argv: list[str], config_dir: str, config_name: str,
              check: Callable[[DictConfig, list[str]], DictConfig], searchpath: tuple[str, ...] = ()) -> DictConfig | None:
    """The config a command line runs (of a sweep: its master config), every job checked (`planned`);
    None for Hydra's commands that only print. For a caller that checks a command line without running it."""
    with planned(argv, config_dir, config_name, check, searchpath) as plan:
        return plan.cfg if plan is not None else None


def preflight_plan(loader, config_name: str, overrides: list[str], multirun: bool,
                   check: Callable[[DictConfig, list[str]], DictConfig]) -> Plan:
    """Compose and check every job this command line would run, before anything is written.

    Hydra reports a bad override with several lines and exit code 1, after it has made the run's
    directory; and a sweep would stop at its first bad job. So the entry points compose here
    first: types (the schema), then `check(job_config, job_overrides)`, which returns the config the
    job runs (with resume=, the run's own); all bad jobs of a sweep are named in one ConfigError.
    """
    from hydra.types import RunMode

    try:
        cfg = loader.load_configuration(config_name, overrides, run_mode=RunMode.MULTIRUN if multirun else RunMode.RUN)
        record = cfg.hydra.output_subdir
        if record is not None and (Path(str(record)).is_absolute() or ".." in Path(str(record)).parts):
            raise ConfigError(f"hydra.output_subdir={record} would put Hydra's record of the run outside the run's "
                              f"directory; name a folder inside it (default: .hydra)")
        task = list(cfg.hydra.overrides.task)
        if not multirun:
            return Plan(cfg, False, {tuple(task): check(cfg, task)}, loader=loader, overrides=overrides, check=check)
        sweeper = str(cfg.hydra.sweeper._target_)
        if not sweeper.endswith((".BasicSweeper", ".JobSweeper")):
            check(cfg, task)  # Optuna and the like draw each job's values as they go: each is checked where it runs
            return Plan(cfg, True, {}, loader=loader, overrides=overrides, check=check)
        from pii.run.sweep import plan

        extended = sweeper.endswith(".JobSweeper")
        jobs = plan(loader, cfg, task, extended=extended)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(one_line(err)) from None
    bad, checked = [], {}
    for job in jobs:
        try:
            if job.error:
                raise ConfigError(job.error)
            checked[tuple(job.config.hydra.overrides.task)] = check(job.config, job.overrides)
        except (ConfigError, HydraException, OmegaConfBaseException) as err:
            bad.append(f"job {job.number} ({' '.join(o for o in job.overrides if not o.startswith('hydra.'))}): "
                       f"{err if isinstance(err, ConfigError) else one_line(err)}")
    if bad:
        raise ConfigError(f"{len(bad)} of the sweep's {len(jobs)} jobs are bad, so none was run: {few(bad, 2, '; ')}")
    return Plan(cfg, True, checked, jobs if extended else None, loader, overrides, check)


class Checked:
    """The task of a run or of a sweep's job, handed a checked config: the one the preflight composed
    and checked for it (found by the job's overrides), trusted, rather than the one Hydra composes
    again for the job. A job the preflight could not plan (a sweeper that draws its values as it
    goes: Optuna) is checked here, where it runs, by the plan's own check. `lock`: a sweep's job holds
    its directory's lock while it runs, wherever its launcher runs it (a run's is held by the entry
    point: `run_directory`)."""

    def __init__(self, task: Callable[[DictConfig], object], plan: Plan, lock: bool = False):
        self.task, self.plan, self.lock = task, plan, lock

    def __call__(self, cfg: DictConfig) -> object:
        from hydra.core.hydra_config import HydraConfig

        with files.locked(HydraConfig.get().runtime.output_dir) if self.lock else nullcontext():
            task = list(HydraConfig.get().overrides.task)
            checked = self.plan.checked.get(tuple(task))
            checked = self.plan.check(cfg, task) if checked is None else copy.deepcopy(checked)
            with read_write(checked), open_dict(checked):
                checked.pop("hydra", None)  # as Hydra hands a task its config
            return self.task(checked)


def launch(plan: Plan, task: Callable[[DictConfig], object], resume_hint: Callable[[str], str] | None = None,
           continuing: bool = False, directory: str | None = None, key: str | None = None) -> None:
    """Run `task` (Hydra's job: its logging, .hydra/ record and callbacks) on the plan's checked configs,
    in `directory` (default: the plan's hydra.run.dir, or hydra.sweep.dir), made and locked here
    (`run_directory`); a sweep by its sweeper and launcher. `continuing`: a resumed run, in the
    directory that holds it; its .hydra/ (what resume reads) is kept as the run was started."""
    from hydra.core.plugins import Plugins
    from hydra.core.utils import configure_log, run_job
    from hydra.types import HydraContext

    from pii.run.hydra_private import Callbacks

    cfg, directory, key = plan.cfg, directory or plan.directory, key or plan.key
    with run_directory(directory, key, None if plan.multirun else resume_hint, continuing):
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            if plan.multirun:  # each job is composed again from these (Hydra's load_sweep_config)
                cfg.hydra.sweep.dir = directory
                cfg.hydra.overrides.hydra.append(f"hydra.sweep.dir={quoted(directory)}")
            else:
                cfg.hydra.run.dir = directory
                if continuing:
                    cfg.hydra.output_subdir = None
        configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
        callbacks = Callbacks(cfg)
        context = HydraContext(config_loader=plan.loader, callbacks=callbacks)
        name = str(cfg.hydra.job.config_name)
        checked = Checked(task, plan, lock=plan.multirun)
        if not plan.multirun:
            callbacks.on_run_start(config=cfg, config_name=name)
            done = run_job(task_function=checked, config=cfg, job_dir_key="hydra.run.dir", job_subdir_key=None,
                           hydra_context=context)
            callbacks.on_run_end(config=cfg, config_name=name, job_return=done)
            done.return_value  # noqa: B018  (raises the job's error)
            return
        from pii.run.sweep import continue_command

        with ending(f"continue with: {continue_command(directory)}"):
            callbacks.on_multirun_start(config=cfg, config_name=name)
            sweeper = Plugins.instance().instantiate_sweeper(config=cfg, hydra_context=context, task_function=checked)
            arguments = list(cfg.hydra.overrides.task)
            sweeper.sweep(arguments, jobs=plan.jobs) if plan.jobs is not None else sweeper.sweep(arguments)
            callbacks.on_multirun_end(config=cfg, config_name=name)


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


def invert_main() -> None:
    """`python invert.py ...` / `pii-invert`: preflight, claim the run's directory, run what was checked."""
    from pii.run.sweep import register_plugins

    register_plugins()
    with ending(), planned(sys.argv[1:], CONF_DIR, "config", check_invert_job) as plan:
        if plan is None:  # --help, --cfg, ...: Hydra prints, nothing is written
            return _invert_main()
        if not plan.cfg.get("resume"):
            return launch(plan, invert_job, resume_hint=lambda d: hydra_arg("resume", d))
        if plan.multirun:  # resume=<sweep dir> (pii.run.sweep)
            return launch(plan, invert_job, continuing=True)
        # A resumed run logs into its own directory (appending to invert.log) and keeps the .hydra/
        # of the run it continues: that config is what resume= reads.
        run_dir = str(Path(str(plan.cfg.resume)).expanduser().absolute())
        given = [o.split("=", 1)[1] for o in plan.overrides if o.startswith("hydra.run.dir=")]
        if given and Path(given[-1].strip("'\"")).expanduser().absolute() != Path(run_dir):
            raise ConfigError(f"resume= writes into the run it continues ({run_dir}); drop hydra.run.dir=...")
        from pii.run.resume import finished_result

        if finished_result(Path(run_dir)) is not None:  # resuming a finished run changes nothing
            print(f"{run_dir} is a finished run (metrics.json is there); nothing to resume", file=sys.stderr)
            return
        launch(plan, invert_job, continuing=True, directory=run_dir, key="resume")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _invert_main(cfg: DictConfig) -> None:
    """Hydra's own main, for its commands that only print (SHOWS): they never reach here."""
    raise RuntimeError("invert.py runs through pii.run.cli.launch")


def invert_job(cfg: DictConfig) -> float:
    """One invert.py run (or sweep job) in Hydra's job, of the config the preflight checked (`Checked`)."""
    from pii.run.runner import run_checked

    out = str(cfg.get("resume") or cfg.output_dir)
    with ending(f"finished stages are saved; continue with: python invert.py {hydra_arg('resume', out)}"):
        result = run_checked(cfg)
    return sweep_metric(result, cfg.sweep_metric)


def sweep_metric(result: RunResult, name: str) -> float:
    """What a sweeper optimises (`sweep_metric=`): the first judge's top-1, the judged number (without
    a judge, verifier=none: the inverted model's own top-1 rate); or that per second of inversion."""
    judges = list((result.judge or {}).values())
    top1 = judges[0].top1 if judges else result.top1_rate
    return top1 / result.seconds if name == "judged_top1_per_second" else top1


class ScriptParser(argparse.ArgumentParser):
    """A script's command line (scripts/): a bad argument is bad input like any other, one line
    (`error: ...`, how to see the usage) and exit code 2 through `ending`, not argparse's usage block."""

    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (python scripts/{self.prog} --help shows the usage)")


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
