"""A tiny config for tests that run many inversions: the real config tree with
a random-weight timm test model at 32 px, 3 stages of 3 steps, CPU."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from conftest import compose_config

RANDOM_TINY = ["model=timm", "model.name=test_efficientnet", "model.weights=random", "model.input_size=32",
               "model.num_classes=10", "class_id=[1,2]", "schedule.stages=3", "schedule.steps=3",
               "augmentation.ensemble_size=2", "augmentation.jitter=4", "device=cpu"]


def tiny_cfg(out_dir: Path, *overrides: str) -> DictConfig:
    return compose_config([*RANDOM_TINY, f"output_dir={out_dir}", *overrides])
