"""Every option of every config group composes with the real primary config."""

from pathlib import Path

import pytest
from conftest import compose_config
from omegaconf import OmegaConf

from pii import CONF_DIR

# A folder with its own config.yaml is another entry point's config root (conf/train_invert), not a group.
GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and not (p / "config.yaml").exists())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((Path(CONF_DIR) / g).glob("*.yaml"))]


@pytest.mark.parametrize("group,option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_option_composes(group, option):
    cfg = compose_config([f"{group}={option}", "output_dir=/tmp/x"])
    OmegaConf.resolve(cfg)  # every interpolation resolves
    assert cfg.class_id is not None


def test_defaults_are_the_papers_settings():
    cfg = compose_config(["output_dir=/tmp/x"])
    assert cfg.model.name == "tf_efficientnet_lite0" and cfg.model.weights.startswith("package:")
    assert (cfg.schedule.stages, cfg.schedule.steps, cfg.schedule.zoom, cfg.schedule.centering) == (7, 400, True, True)
    assert (cfg.schedule.lr, list(cfg.schedule.betas)) == (0.01, [0.5, 0.99])
    a = cfg.augmentation
    assert (a.ensemble_size, a.color_shift, a.alpha, a.beta, a.jitter, a.flip) == (32, True, 1.0, 1.0, 32, False)
    assert cfg.loss.tv_weight == 0.0


def test_fast_preset_keeps_the_algorithm_and_shrinks_the_budget():
    """`make run`'s preset: the leaderboard's winner, pii_fourier; the paper's pixels at that budget stay `experiment=pii`."""
    paper, fast = compose_config(["output_dir=/x"]), compose_config(["experiment=fast", "output_dir=/x"])
    assert fast == compose_config(["recipe=pii_fourier", "output_dir=/x"])
    assert fast.schedule.steps < paper.schedule.steps and fast.augmentation.ensemble_size < paper.augmentation.ensemble_size
    for key in ("stages", "zoom", "centering", "betas"):  # PII's schedule and optimiser
        assert fast.schedule[key] == paper.schedule[key]
    assert fast.augmentation.color_shift and fast.augmentation.alpha == 1.0
    assert fast.augmentation.jitter == paper.augmentation.jitter
    assert fast.param.name == "fourier" and paper.param.name == "pixel"
    pixels = compose_config(["experiment=pii", "output_dir=/x"])
    assert pixels.param.name == "pixel" and pixels.schedule.steps == fast.schedule.steps
    # fewer steps, larger steps: Adam's ~lr-sized updates add up to the paper's per-stage budget
    assert pixels.schedule.lr * pixels.schedule.steps == pytest.approx(paper.schedule.lr * paper.schedule.steps)


def test_the_names_users_type():
    cfg = compose_config(["augmentation.ensemble_size=8", "augmentation.alpha=0.5", "augmentation.beta=0.25",
                          "schedule.stages=3", "schedule.steps=10", "loss=tv", "loss.tv_weight=0.1",
                          "device=cpu", "seed=3", "class_id=[980,10,970]", "output_dir=/x"])
    assert cfg.augmentation.ensemble_size == 8 and cfg.loss.tv_weight == 0.1 and list(cfg.class_id) == [980, 10, 970]
