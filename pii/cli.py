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
