"""Composing a config from conf/ (pii.run.config.CONF_DIR) and overrides, without running it.

A library module (pii.run.digits, pii.eval.leaderboard), a script or a test composes
here; the entry points (pii.run.cli, pii.feedforward.cli) use the same directory
and error wording. This module never imports them.
"""

from __future__ import annotations

import re
import shlex

from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from pii import CONF_DIR
from pii.errors import ConfigError
from pii.run import config  # noqa: F401  (registers the schemas that conf/config.yaml's defaults name)


def one_line(err: Exception) -> str:
    """A Hydra or OmegaConf error as one line that names the override and the key; for an override
    Hydra's grammar cannot read, how to quote it."""
    if isinstance(err, OverrideParseException) and err.override and "=" in err.override:
        key, value = err.override.split("=", 1)
        return (f"cannot read the override {err.override!r} ({str(err).splitlines()[0]}): a value with spaces, "
                f"=, commas, brackets, parentheses or quotes must be quoted for Hydra and for the shell: "
                f"{hydra_arg(key, value)}")
    text = str(err).split("Config search path:")[0]  # Hydra appends its search path to a missing option
    text = " ".join(line.strip() for line in text.splitlines() if line.strip())
    if isinstance(err, OmegaConfBaseException):
        text = str(err).splitlines()[0]
    if isinstance(err.__cause__, OmegaConfBaseException):
        text += f" ({str(err.__cause__).splitlines()[0]})"
    return text


def renamed(overrides: list[str]) -> None:
    """An old key on the command line, said in one line: `objective=` named the sweep's metric
    before it picked what is optimised (conf/objective/); the augmentation's flat keys
    (`augmentation.ensemble_size=`, `.alpha=`, ...) before each transform was a class of its own key."""
    from pii.run.config import SWEEP_METRICS, old_augmentation_key

    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "objective" and value in SWEEP_METRICS:
            raise ConfigError(f"{override!r}: what a sweeper optimises is now sweep_metric={value}; objective= picks "
                              f"what the inversion optimises (conf/objective/: class, channel, ...)")
        group, _, name = key.partition(".")
        if group == "augmentation" and (new := old_augmentation_key(name, value)):
            raise ConfigError(f"{override!r}: {new}")


def quoted(value: str) -> str:
    """A value as Hydra's override grammar reads it back unchanged (a sweep job's dir holds '=' and ',')."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hydra_arg(key: str, value: str) -> str:
    """`key=value` as typed in a shell so that Hydra reads `value` back unchanged: plain where it holds
    only letters, digits and . / ~ + - _, else quoted for Hydra (a sweep job's directory holds = and ,)
    and for the shell."""
    if re.fullmatch(r"[\w./~+-]+", value):
        return f"{key}={value}"
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return shlex.quote(f'{key}="{escaped}"')


def override_key(override: str) -> str:
    """The key an override sets (`+a.b=1`, `~a.b`: a.b)."""
    return override.split("=", 1)[0].lstrip("+~")


def sweep_jobs(loader, overrides: list[str]) -> list[list[str]]:
    """Each job's overrides in a sweep of `overrides` (the sweeper's params, then the command line's),
    split as Hydra's BasicSweeper splits them when it launches (pii.run.hydra_private)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pii.run.hydra_private import split_sweep

    return split_sweep(OverridesParser.create(config_loader=loader).parse_overrides(overrides))


def compose(overrides: list[str]) -> DictConfig:
    """The config `invert.py <overrides>` would run with, for scripts/ (Hydra's compose API).
    Types are checked (the schema); ranges only by pii.run.config.check_invert, which runner.run calls:
    a script may compose a config only for its model or judges.

    `output_dir` stays unresolved (it names Hydra's run directory): scripts that
    write a run's outputs set it, e.g. `output_dir=outputs/digits/runs/x`.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    renamed(list(overrides))
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="script"):
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(one_line(err)) from None
    return cfg
