"""Tiny, fast configs for tests: the real config tree, shrunk (a random-weight
timm test model at 32 px, 2 stages of a few steps, CPU)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from pii.cli import CONF_DIR

TINY = ["model=timm", "model.name=test_efficientnet", "model.weights=random", "model.input_size=32",
        "model.num_classes=10", "class_id=[1,2]", "schedule.stages=3", "schedule.steps=3",
        "augmentation.ensemble_size=2", "augmentation.jitter=4", "device=cpu"]


def tiny_cfg(out_dir: Path, *overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=[*TINY, f"output_dir={out_dir}", *overrides])
