"""The configs' schemas and their checks: what a value may be, in one place.

The dataclasses are registered in Hydra's ConfigStore and are the first entry
of conf/config.yaml's and conf/train_invert/config.yaml's defaults, so Hydra
itself refuses a value of the wrong type (`augmentation.ensemble_size=abc` or
`=1.5`) while composing. What a type cannot say (ranges, choices, the class
ids against the model) is checked by `check_invert` / `check_train_invert`.
Both run before anything loads or is written (pii.run.cli.preflight, and again at
the top of the run functions for callers that skip the CLI).

Groups whose keys differ between options (train_invert's `data`) or that
hold user data (`class_id`: an int, a list, or `classes=...`) stay `Any`.
This module imports no torch: a bad command line fails in about a second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from pii.errors import ConfigError

OBJECTIVES = ("judged_top1", "judged_top1_per_second")  # pii.run.cli.objective
OPTIMIZERS = ("adam", "nadam")  # schedule.optimizer; pii.core.schedule.OPTIMIZERS maps them to torch.optim classes
ROBUST_NORMS = ("linf", "l2")  # robust.norm; pii.models.robust.PGD attacks in either


@dataclass
class ModelConfig:
    """conf/model/timm.yaml: every model entry (and every judge) has these keys."""
    name: str = MISSING
    input_size: Optional[int] = None
    fixed_size: Optional[bool] = None
    mean: Optional[List[float]] = None
    std: Optional[List[float]] = None
    num_classes: int = 1000
    weights: Optional[str] = "pretrained"
    remap: bool = False
    kwargs: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentationConfig:
    jitter: int = 32
    flip: bool = False
    ensemble_size: int = 32
    color_shift: bool = True
    alpha: float = 1.0
    beta: float = 1.0
    chunk: Any = "auto"  # auto, or a number of views per forward/backward
    pad: int = 0
    shift: int = 0
    crops: Optional[List[float]] = None
    crop_centre_std: float = 0.15
    scale: Optional[List[float]] = None
    degrees: float = 0.0
    noise: float = 0.0


@dataclass
class ParamConfig:
    """conf/param/: pixel | fourier | maco (pii/core/param.py); the keys besides `name` depend on it."""
    name: str = "pixel"
    decay: Optional[float] = None
    sd: Optional[float] = None
    decorrelate: Optional[bool] = None
    spectrum: Optional[str] = None
    standardize_phase: Optional[bool] = None


@dataclass
class ScheduleConfig:
    stages: int = 7
    steps: int = 400
    zoom: bool = True
    centering: bool = True
    lr: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.5, 0.99])
    optimizer: str = "adam"


@dataclass
class LossConfig:
    tv_weight: float = 0.0
    l2_weight: float = 0.0
    bn_weight: float = 0.0


@dataclass
class LoggerConfig:
    backend: str = "none"
    mode: str = "online"
    project: str = "pii"
    entity: Optional[str] = None
    group: Optional[str] = None
    run_name: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    init_timeout: float = 30.0


@dataclass
class RobustConfig:
    """conf/robust/: none (natural) | linf | l2, PGD adversarial training of the classifiers trained here."""
    norm: Optional[str] = None
    epsilon: float = 0.0
    steps: int = 0
    step_size: float = 0.0
    warmup: float = 0.0
    eval_steps: int = 20
    tag: str = ""


@dataclass
class InvertConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    param: ParamConfig = field(default_factory=ParamConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    verifier: Dict[str, ModelConfig] = field(default_factory=dict)
    class_id: Any = 980
    seed: int = 0
    device: str = "auto"
    precision: str = "bf16"
    channels_last: bool = True
    fold_batchnorm: bool = True
    cudnn_benchmark: bool = False
    compile: Any = "auto"  # true, false, or auto (pii.models.device.wants_compile)
    log_every: int = 10
    objective: str = "judged_top1"
    method: str = "pixel"  # the leaderboard's label of a method preset
    output_dir: str = MISSING
    resume: Optional[str] = None
    init_from: Optional[str] = None


@dataclass
class SmallCNNConfig:
    """conf/train_invert/classifier/: small_cnn, or kind=model (the other keys then unused)."""
    kind: str = "small_cnn"
    num_classes: Optional[int] = None
    width: int = 32
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.003
    seed: int = 0
    checkpoint: Optional[str] = None
    cache_dir: str = "outputs/train_invert/classifiers"


@dataclass
class GeneratorConfig:
    resolution: int = 32
    base: int = 4
    width: int = 16
    max_mult: int = 4
    z_dim: int = 64
    embed_dim: int = 64
    hierarchical: bool = True
    spectral_norm: bool = True


@dataclass
class DiscriminatorConfig:
    base: int = 4
    width: int = 16
    max_mult: int = 4
    spectral_norm: bool = True


@dataclass
class GanLossConfig:
    adversarial: float = 1.0
    pixel_l1: float = 0.0
    feature_matching: float = 0.0
    logit_consistency: float = 0.0


@dataclass
class TrainScheduleConfig:
    steps: int = 400
    batch_size: int = 32
    lr_g: float = 0.001
    lr_d: float = 0.0004
    betas: List[float] = field(default_factory=lambda: [0.0, 0.999])
    ema_decay: float = 0.99
    ema_start: int = 0
    checkpoint_every: int = 100
    sample_every: int = 100
    log_every: int = 10
    workers: int = 0
    precision: str = "fp32"
    compile: bool = False
    sync_batchnorm: bool = False


@dataclass
class TrainInvertConfig:
    data: Any = None  # digits, cifar10 and folder have different keys
    classifier: SmallCNNConfig = field(default_factory=SmallCNNConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: GanLossConfig = field(default_factory=GanLossConfig)
    schedule: TrainScheduleConfig = field(default_factory=TrainScheduleConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    model: Optional[ModelConfig] = None
    mode: str = "train"
    conditions: List[str] = field(default_factory=lambda: ["logits", "onehot"])
    temperature: float = 1.0
    seed: int = 0
    device: str = "auto"
    num_threads: Optional[int] = 1
    channels_last: bool = True
    workers: int = 0
    resume: bool = False
    run_dir: Optional[str] = None
    fit_images: int = 2048
    eval_batch_size: int = 128
    grid_images: int = 8
    analyses: List[str] = field(default_factory=list)
    output_dir: str = MISSING


ConfigStore.instance().store(name="invert_schema", node=InvertConfig)
ConfigStore.instance().store(name="train_invert_schema", node=TrainInvertConfig)

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class Problems(list):
    """The problems found in one config; raised together as one ConfigError line."""

    def at_least(self, cfg: DictConfig, key: str, low: float, strict: bool = False) -> None:
        value = cfg_get(cfg, key)
        if value is not None and (value <= low if strict else value < low):
            self.append(f"{key} must be {'>' if strict else '>='} {low:g}, got {value}")

    def raise_any(self) -> None:
        if self:
            raise ConfigError("; ".join(self))


def cfg_get(cfg: DictConfig, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def _betas(problems: Problems, key: str, betas) -> None:
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        problems.append(f"{key} must be two numbers in [0, 1), got {list(betas)}; e.g. {key}=[0.5,0.99]")


def _range(problems: Problems, key: str, pair) -> None:
    """An optional [low, high] (augmentation.crops, .scale)."""
    if pair is not None and (len(pair) != 2 or not 0 < pair[0] <= pair[1]):
        problems.append(f"{key} must be [low, high] with 0 < low <= high, got {list(pair)}; e.g. {key}=[0.5,1.0]")


def _device(problems: Problems, device: str) -> None:
    if not DEVICE.fullmatch(device):
        problems.append(f"unknown device {device!r}; use device=auto, device=cpu, device=cuda or device=cuda:<n>")


def _model(problems: Problems, cfg: DictConfig, key: str) -> None:
    """A model config at `key` (model, or verifier.<name>)."""
    problems.at_least(cfg, f"{key}.input_size", 1)
    problems.at_least(cfg, f"{key}.num_classes", 1)
    for name in ("mean", "std"):
        values = cfg_get(cfg, f"{key}.{name}")
        if values is not None and (len(values) != 3 or (name == "std" and min(values) <= 0)):
            problems.append(f"{key}.{name} must be 3 numbers (R, G, B){', each > 0' if name == 'std' else ''}, "
                            f"got {list(values)}")


def _robust(problems: Problems, cfg: DictConfig, model_key: str | None) -> None:
    """The `robust` group; `model_key`: the model whose weights it picks (None: one trained in the run)."""
    robust = cfg.get("robust")
    if robust is None or robust.norm is None:
        return
    if robust.norm not in ROBUST_NORMS:
        problems.append(f"robust.norm must be one of {', '.join(ROBUST_NORMS)} (or robust=none), got {robust.norm!r}")
    for key in ("epsilon", "step_size"):
        problems.at_least(cfg, f"robust.{key}", 0, strict=True)
    for key in ("steps", "eval_steps"):
        problems.at_least(cfg, f"robust.{key}", 1)
    if not 0 <= robust.warmup <= 1:
        problems.append(f"robust.warmup must be a share of the training steps in [0, 1], got {robust.warmup}")
    if model_key and robust.tag not in str(cfg_get(cfg, f"{model_key}.weights")):
        # only the models trained here have a robust version to pick; it would be a silent no-op
        problems.append(f"robust={robust.norm} picks the robust weights of a digits model (model=digits_cnn, "
                        f"digits_vit, digits_mixer; their files end in {robust.tag}.pt), but {model_key}.weights is "
                        f"{cfg_get(cfg, f'{model_key}.weights')}; for an ImageNet model use model=resnet50_robust "
                        f"model.weights=<file>, and leave robust=none")


def check_invert(cfg: DictConfig) -> None:
    """Ranges and choices of an invert.py config (types are the schema's); ConfigError naming every bad key."""
    from pii.models.classes import parse_class_ids

    problems = Problems()
    _model(problems, cfg, "model")
    for name in cfg.get("verifier") or {}:
        _model(problems, cfg, f"verifier.{name}")
    for key in ("augmentation.ensemble_size", "schedule.stages", "schedule.steps", "log_every"):
        problems.at_least(cfg, key, 1)
    chunk = cfg.augmentation.chunk
    if chunk != "auto" and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        problems.append(f"augmentation.chunk must be auto or a number of views >= 1, got {chunk!r}; "
                        f"e.g. augmentation.chunk=64")
    if cfg.objective not in OBJECTIVES:
        problems.append(f"objective must be one of {', '.join(OBJECTIVES)}, got {cfg.objective!r}")
    if cfg.compile not in (True, False, "auto"):
        problems.append(f"compile must be true, false or auto, got {cfg.compile!r}")
    for key in ("augmentation.jitter", "augmentation.alpha", "augmentation.beta", "augmentation.pad",
                "augmentation.shift", "augmentation.degrees", "augmentation.noise", "augmentation.crop_centre_std",
                "loss.tv_weight", "loss.l2_weight", "loss.bn_weight"):
        problems.at_least(cfg, key, 0)
    for key in ("crops", "scale"):
        _range(problems, f"augmentation.{key}", cfg.augmentation.get(key))
    if cfg.schedule.optimizer not in OPTIMIZERS:
        problems.append(f"unknown schedule.optimizer {cfg.schedule.optimizer!r}; available: {', '.join(OPTIMIZERS)}")
    problems.at_least(cfg, "schedule.lr", 0, strict=True)
    problems.at_least(cfg, "logger.init_timeout", 0, strict=True)
    _betas(problems, "schedule.betas", cfg.schedule.betas)
    _device(problems, cfg.device)
    if cfg.precision not in ("fp32", "bf16"):
        problems.append(f"precision must be fp32 or bf16, got {cfg.precision!r}")
    if cfg.get("resume") and cfg.get("init_from"):
        problems.append("resume= and init_from= exclude each other: resume continues a run, init_from starts a new one")
    _robust(problems, cfg, "model")
    problems.raise_any()
    parse_class_ids(cfg.class_id, cfg.model.num_classes)  # after the model's num_classes is known to be sane


def check_train_invert(cfg: DictConfig) -> None:
    """Ranges and choices of a train_invert.py config; ConfigError naming every bad key."""
    problems = Problems()
    for key in ("schedule.steps", "schedule.batch_size", "schedule.checkpoint_every", "schedule.sample_every",
                "schedule.log_every", "grid_images", "fit_images", "eval_batch_size", "generator.resolution",
                "generator.base", "generator.width", "generator.max_mult", "generator.z_dim",
                "generator.embed_dim", "discriminator.base", "discriminator.width", "discriminator.max_mult",
                "classifier.width", "classifier.epochs", "classifier.batch_size", "classifier.num_classes",
                "num_threads"):
        problems.at_least(cfg, key, 1)
    for key in ("schedule.ema_start", "workers", "loss.adversarial", "loss.pixel_l1", "loss.feature_matching",
                "loss.logit_consistency"):
        problems.at_least(cfg, key, 0)
    for key in ("schedule.lr_g", "schedule.lr_d", "classifier.lr", "temperature", "logger.init_timeout"):
        problems.at_least(cfg, key, 0, strict=True)
    if not 0 <= cfg.schedule.ema_decay < 1:
        problems.append(f"schedule.ema_decay must be in [0, 1), got {cfg.schedule.ema_decay}")
    _betas(problems, "schedule.betas", cfg.schedule.betas)
    _device(problems, cfg.device)
    if cfg.schedule.precision not in ("fp32", "bf16"):
        problems.append(f"schedule.precision must be fp32 or bf16, got {cfg.schedule.precision!r}")
    if not cfg.conditions:
        problems.append("conditions is empty: nothing to train; e.g. conditions=[logits,onehot]")
    if len(set(cfg.conditions)) != len(cfg.conditions):
        problems.append(f"conditions lists one twice: {list(cfg.conditions)}")
    if cfg.get("model") is not None:
        _model(problems, cfg, "model")
    _robust(problems, cfg, "model" if cfg.classifier.kind == "model" else None)
    problems.raise_any()
