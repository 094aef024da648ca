"""A tiny config for tests that run many inversions: the real config tree with
a random-weight timm test model at 32 px, 3 stages of 3 steps, CPU."""

from __future__ import annotations

from pathlib import Path

from conftest import compose_config
from omegaconf import DictConfig

from pii.eval.results import ClassResult, JudgeResult, RunResult, StageTime, TopClass, Verdict

RANDOM_TINY = ["model=timm", "model.name=test_efficientnet", "model.weights=random", "model.input_size=32",
               "model.num_classes=10", "class_id=[1,2]", "schedule.stages=3", "schedule.steps=3",
               "augmentation.ensemble.size=2", "augmentation.jitter.max_shift=4", "device=cpu"]


def tiny_cfg(out_dir: Path, *overrides: str) -> DictConfig:
    return compose_config([*RANDOM_TINY, f"output_dir={out_dir}", *overrides])


def made_up_result(images: dict[int, str], judged: bool = True) -> RunResult:
    """A complete RunResult with made-up figures for the classes of `images` (class id: PNG name)."""
    classes = [ClassResult(cid, f"class {cid}", 0.5, True, [TopClass(cid, f"class {cid}", 0.5), TopClass(0, "z", 0.1)],
                           0.1, name, -2.0) for cid, name in images.items()]
    verdicts = [Verdict(c.class_id, c.name, 0.25, False, True, 0, "z", -2.0) for c in classes]
    judge = {"lite": JudgeResult("lite", 32, len(classes), 0.0, 1.0, 0.25, -2.0, classes=verdicts)} if judged else {}
    return RunResult(model="test", device="cpu", seconds=2.0, seconds_per_class=2.0 / len(classes), steps=6,
                     stage_sizes=[16, 32], ensemble_size=2, param="pixel", spectral_slope=-2.0, mean_probability=0.5,
                     top1_rate=1.0, classes=classes, config={"seed": 0, "param": {"name": "pixel"}, "resume": None},
                     first_stage=1, stage_seconds=[StageTime(16, 3, 0.1, 0.5), StageTime(32, 3, 0.2, 1.5)],
                     judge=judge)
