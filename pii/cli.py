"""Hydra entry points. They stay thin: compose the config, call a pure
function, and turn a ConfigError into one line and exit code 2."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pii.errors import ConfigError

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def fail(err: ConfigError) -> None:
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def invert_main(cfg: DictConfig) -> float:
    from pii.runner import run

    try:
        metrics = run(cfg)
    except ConfigError as err:
        fail(err)
    return metrics["mean_probability"]
