"""Hydra entry points. They stay thin: compose the config, call a pure
function, and turn a ConfigError into one line and exit code 2."""

from __future__ import annotations

import logging
import re
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pii.errors import ConfigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")
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
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def invert_main(cfg: DictConfig) -> float:
    from pii.runner import run

    try:
        with sigterm_as_interrupt():
            metrics = run(cfg)
    except ConfigError as err:
        fail(err)
    except KeyboardInterrupt:
        out = str(cfg.get("resume") or cfg.output_dir)
        # a sweep job's dir holds '=' and ',': Hydra needs such a value quoted
        arg = f"resume={out}" if re.fullmatch(r"[\w./~-]+", out) else f"'resume=\"{out}\"'"
        log.warning("interrupted; finished stages are saved; continue with: python invert.py %s", arg)
        sys.exit(130)
    return objective(metrics)


def objective(metrics: dict) -> float:
    """What a sweeper optimises: the first judge's top-1 (the judged number), or without a judge
    (verifier=none) the inverted model's own top-1 rate."""
    judges = list((metrics.get("judge") or {}).values())
    return judges[0]["top1"] if judges else metrics["top1_rate"]


def compose(overrides: list[str]):
    """The config `invert.py <overrides>` would run with, for scripts/ (Hydra's compose API).

    `output_dir` stays unresolved (it names Hydra's run directory): scripts that
    write a run's outputs set it, e.g. `output_dir=outputs/digits/runs/x`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="script"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(f"bad override in {' '.join(overrides)!r}: {str(err).splitlines()[0]}") from None


def script_main(main) -> None:
    """Run a scripts/ entry point: log to the console; a ConfigError is one line and exit code 2."""
    import logging

    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s", datefmt="%H:%M:%S")
    try:
        main(sys.argv[1:])
    except ConfigError as err:
        fail(err)
