"""train_invert.py's config: its schemas, their checks, and composing it without running it.

As invert.py's (pii.run.config, whose `Problems` and model and `robust` checks these reuse), the
dataclasses hold types only (every field MISSING): the values are in conf/train_invert/'s YAML
files. They are registered in Hydra's ConfigStore on import and are the first entry of
conf/train_invert/config.yaml's defaults. `check_train_invert` checks what a type cannot say,
before anything loads or is written (pii.feedforward.cli's preflight, and again at the top of
pii.feedforward.runner.train_invert). Like pii.run.config, no torch at import time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from omegaconf import MISSING, DictConfig

from pii import CONF_DIR
from pii.core.precision import PRECISIONS
from pii.run.config import (
    STORE,
    ModelConfig,
    Problems,
    RobustConfig,
    cfg_get,
    check_betas,
    check_device,
    check_model,
    check_robust,
)

TRAIN_INVERT_CONF_DIR = str(Path(CONF_DIR) / "train_invert")
# train_invert's configs reach conf/'s groups (the `model` group: any classifier of invert.py)
SEARCHPATH = f"hydra.searchpath=[file://{CONF_DIR}]"


@dataclass
class SmallCNNConfig:
    """conf/train_invert/classifier/small_cnn.yaml: `_target_` is its builder, the other keys its arguments."""
    _target_: str = MISSING
    num_classes: Optional[int] = MISSING
    width: int = MISSING
    epochs: int = MISSING
    batch_size: int = MISSING
    lr: float = MISSING
    seed: int = MISSING
    checkpoint: Optional[str] = MISSING
    cache_dir: str = MISSING


@dataclass
class ModelClassifierConfig:
    """conf/train_invert/classifier/model.yaml: the `model` group's model (its builder takes no keys)."""
    _target_: str = MISSING


@dataclass
class GeneratorConfig:
    """conf/train_invert/generator/: `_target_` is the class (pii.feedforward.generator.Generator),
    the other keys its arguments."""
    _target_: str = MISSING
    resolution: int = MISSING
    base: int = MISSING
    width: int = MISSING
    max_mult: int = MISSING
    z_dim: int = MISSING
    embed_dim: int = MISSING
    hierarchical: bool = MISSING
    spectral_norm: bool = MISSING


@dataclass
class DiscriminatorConfig:
    """conf/train_invert/discriminator/: as the generator's; its resolution is the generator's."""
    _target_: str = MISSING
    base: int = MISSING
    width: int = MISSING
    max_mult: int = MISSING
    spectral_norm: bool = MISSING


@dataclass
class GanLossConfig:
    adversarial: float = MISSING
    pixel_l1: float = MISSING
    feature_matching: float = MISSING
    logit_consistency: float = MISSING


@dataclass
class TrainScheduleConfig:
    steps: int = MISSING
    batch_size: int = MISSING
    lr_g: float = MISSING
    lr_d: float = MISSING
    betas: List[float] = MISSING
    ema_decay: float = MISSING
    ema_start: int = MISSING
    checkpoint_every: int = MISSING
    sample_every: int = MISSING
    log_every: int = MISSING
    workers: int = MISSING
    precision: str = MISSING
    compile: bool = MISSING
    sync_batchnorm: bool = MISSING


@dataclass
class TrainInvertConfig:
    data: Any = MISSING  # digits, cifar10 and folder have different keys
    classifier: Any = MISSING  # each option's own schema (SmallCNNConfig, ModelClassifierConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: GanLossConfig = field(default_factory=GanLossConfig)
    schedule: TrainScheduleConfig = field(default_factory=TrainScheduleConfig)
    logger: Any = MISSING  # each option's own schema (NoLoggerConfig, WandbLoggerConfig): its file's defaults name it
    robust: RobustConfig = field(default_factory=RobustConfig)
    model: Optional[ModelConfig] = MISSING
    mode: str = MISSING
    conditions: List[str] = MISSING
    temperature: float = MISSING
    seed: int = MISSING
    device: str = MISSING
    num_threads: Optional[int] = MISSING
    channels_last: bool = MISSING
    resume: bool = MISSING
    run_dir: Optional[str] = MISSING
    fit_images: int = MISSING
    eval_batch_size: int = MISSING
    grid_images: int = MISSING
    analyses: List[str] = MISSING
    output_dir: str = MISSING


STORE.store(name="train_invert_schema", node=TrainInvertConfig)
STORE.store(group="schema/classifier", name="small_cnn", node=SmallCNNConfig)
STORE.store(group="schema/classifier", name="model", node=ModelClassifierConfig)


def check_train_invert(cfg: DictConfig) -> None:
    """Ranges and choices of a train_invert.py config; ConfigError naming every bad key."""
    problems = Problems()
    problems.finite(cfg)
    for key in ("schedule.steps", "schedule.batch_size", "schedule.checkpoint_every", "schedule.sample_every",
                "schedule.log_every", "grid_images", "fit_images", "eval_batch_size", "generator.resolution",
                "generator.base", "generator.width", "generator.max_mult", "generator.z_dim",
                "generator.embed_dim", "discriminator.base", "discriminator.width", "discriminator.max_mult",
                "classifier.width", "classifier.epochs", "classifier.batch_size", "classifier.num_classes",
                "num_threads", "data.max_test"):
        problems.at_least(cfg, key, 1)
    for key in ("schedule.ema_start", "schedule.workers", "loss.adversarial", "loss.pixel_l1",
                "loss.feature_matching", "loss.logit_consistency"):
        problems.at_least(cfg, key, 0)
    for key in ("schedule.lr_g", "schedule.lr_d", "classifier.lr", "temperature", "logger.init_timeout"):
        problems.at_least(cfg, key, 0, strict=True)
    for key in ("schedule.lr_g", "schedule.lr_d", "classifier.lr"):
        problems.at_most(cfg, key, 1, "Adam moves each weight by about lr a step")
    for key in ("seed", "classifier.seed", "data.split_seed"):
        problems.seed(cfg, key)
    if not 0 <= cfg.schedule.ema_decay < 1:
        problems.append(f"schedule.ema_decay must be in [0, 1), got {cfg.schedule.ema_decay}")
    fraction = cfg_get(cfg, "data.test_fraction")
    if fraction is not None and not 0 < fraction < 1:
        problems.append(f"data.test_fraction must be in (0, 1): a share of the images held out, got {fraction}")
    check_betas(problems, "schedule.betas", cfg.schedule.betas)
    check_device(problems, cfg.device)
    if cfg.schedule.precision not in PRECISIONS:
        problems.append(f"schedule.precision must be {' or '.join(PRECISIONS)}, got {cfg.schedule.precision!r}")
    if not cfg.conditions:
        problems.append("conditions is empty: nothing to train; e.g. conditions=[logits,onehot]")
    if len(set(cfg.conditions)) != len(cfg.conditions):
        problems.append(f"conditions lists one twice: {list(cfg.conditions)}")
    if cfg.get("model") is not None:
        check_model(problems, cfg, "model")
    check_robust(problems, cfg, "model" if str(cfg.classifier._target_).endswith(".model_group") else None)
    problems.raise_any()


def compose_train_invert(overrides: list[str] = ()) -> DictConfig:
    """The train_invert config, composed without running (tests, scripts), ranges checked."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(TRAIN_INVERT_CONF_DIR, version_base="1.3"):
        cfg = hydra_compose("config", overrides=[*overrides, SEARCHPATH])
    check_train_invert(cfg)
    return cfg
