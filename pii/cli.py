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
    return metrics["mean_probability"]
