"""`train_invert.py` / `pii-train-invert`: thin Hydra entry point around `train_invert(cfg)`.

Its configs live in conf/train_invert/; conf/ is added to the search path so
that the `model` group (any classifier of invert.py) is available as well.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from pii.errors import ConfigError
from pii.run.cli import fail, preflight
from pii.run.compose import SEARCHPATH, TRAIN_INVERT_CONF_DIR
from pii.run.config import check_train_invert


@hydra.main(version_base="1.3", config_path=TRAIN_INVERT_CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> float:
    from pii.feedforward.runner import train_invert

    try:
        metrics = train_invert(cfg)
    except ConfigError as err:
        fail(err)
    return metrics.get("eval", {}).get("logits", {}).get("retrieval_features", 0.0) if metrics else 0.0


def check_job(cfg: DictConfig, overrides: list[str]) -> None:
    """Preflight of one train_invert.py job: ranges, then the choices the code knows (conditions, ...)."""
    from pii.feedforward.runner import check

    check_train_invert(cfg)
    check(cfg)


def train_invert_main() -> None:
    if not any(arg.startswith("hydra.searchpath") for arg in sys.argv[1:]):
        sys.argv.append(SEARCHPATH)
    try:
        preflight(sys.argv[1:], TRAIN_INVERT_CONF_DIR, "config", check_job)
    except ConfigError as err:
        fail(err)
    _main()
