"""Composing a config from conf/ (pii.run.config.CONF_DIR) and overrides, without running it.

A library module (pii.run.digits, pii.eval.leaderboard), a script or a test composes
here; the entry points (pii.run.cli, pii.feedforward.cli) use the same directory
and error wording. This module never imports them.
"""

from __future__ import annotations

import re
from pathlib import Path

from hydra.errors import HydraException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pii import CONF_DIR
from pii.errors import ConfigError
from pii.run.config import check_train_invert

TRAIN_INVERT_CONF_DIR = str(Path(CONF_DIR) / "train_invert")
# train_invert's configs reach conf/'s groups (the `model` group: any classifier of invert.py)
SEARCHPATH = f"hydra.searchpath=[file://{CONF_DIR}]"


def one_line(err: Exception) -> str:
    """A Hydra or OmegaConf error as one line that names the override and the key."""
    text = str(err).split("Config search path:")[0]  # Hydra appends its search path to a missing option
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if isinstance(err, OmegaConfBaseException):
        text = str(err).splitlines()[0]
    if isinstance(err.__cause__, OmegaConfBaseException):
        text += f" ({str(err.__cause__).splitlines()[0]})"
    return text


def quoted(value: str) -> str:
    """A value as Hydra's override grammar reads it back unchanged (a sweep job's dir holds '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_argument(directory: str) -> str:
    """`resume=<directory>` as one shell word that Hydra reads back unchanged."""
    return f"resume={directory}" if re.fullmatch(r"[\w./~-]+", directory) else f"'resume=\"{directory}\"'"


def compose(overrides: list[str]) -> DictConfig:
    """The config `invert.py <overrides>` would run with, for scripts/ (Hydra's compose API).
    Types are checked (the schema); ranges only by pii.run.config.check_invert, which runner.run calls:
    a script may compose a config only for its model or judges.

    `output_dir` stays unresolved (it names Hydra's run directory): scripts that
    write a run's outputs set it, e.g. `output_dir=outputs/digits/runs/x`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="script"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(one_line(err)) from None
    return cfg


def compose_train_invert(overrides: list[str] = ()) -> DictConfig:
    """The train_invert config, composed without running (tests, notebooks), ranges checked."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(TRAIN_INVERT_CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("config", overrides=[*overrides, SEARCHPATH])
    check_train_invert(cfg)
    return cfg
