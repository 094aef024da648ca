"""invert.py's config schemas and their checks: what a value may be, in one place; and the
checks and groups train_invert's config (pii.feedforward.config) shares with it (`model`,
`logger`, `robust`).

The dataclasses hold types only (every field MISSING): the values, defaults included, are in
the YAML files of conf/, each written once there (docs/architecture.md says why). The schemas are
registered in Hydra's ConfigStore and are the first entry of conf/config.yaml's defaults, so Hydra
itself refuses a value of the wrong type (`schedule.steps=abc` or `=1.5`) while
composing, and a key no YAML sets fails where it is read. The `param` group's options differ in
their keys: each has its own schema (PixelParam, ...), named in its file's defaults. What a type
cannot say (ranges, choices, the class ids against the model, a `_target_` that must load) is
checked by `check_invert`, before anything loads or is written; the augmentation's transforms check
their own arguments as they are built, which `check_invert` does too (pii.run.cli.preflight, and again at
the top of the runner for callers that skip the CLI).

Groups that hold user data (`class_id`: an int, a list, or `classes=...`) stay `Any`. This module
imports no torch at import time: a bad command line fails in about a second.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from pii import CONF_DIR
from pii.core.precision import AUTO, PRECISIONS
from pii.errors import ConfigError, few

SWEEP_METRICS = ("judged_top1", "judged_top1_per_second")  # pii.run.cli.sweep_metric
ROBUST_NORMS = ("linf", "l2")  # robust.norm; pii.models.robust.PGD attacks in either


@dataclass
class ModelConfig:
    """conf/model/timm.yaml: every model entry (and every judge) has these keys."""
    name: str = MISSING
    input_size: Optional[int] = MISSING
    fixed_size: Optional[bool] = MISSING
    mean: Optional[List[float]] = MISSING
    std: Optional[List[float]] = MISSING
    num_classes: int = MISSING
    weights: Optional[str] = MISSING
    remap: bool = MISSING
    kwargs: Dict[str, Any] = MISSING


@dataclass
class PixelParam:
    """conf/param/pixel.yaml; `_target_` is the class (pii.run.build.param), `name` the label metrics.json keeps."""
    _target_: str = MISSING
    name: str = MISSING


@dataclass
class FourierParam(PixelParam):
    """conf/param/fourier.yaml (pii.core.param.Fourier)."""
    decay: float = MISSING
    sd: float = MISSING
    decorrelate: bool = MISSING


@dataclass
class MacoParam(PixelParam):
    """conf/param/maco.yaml (pii.core.param.Maco)."""
    decay: float = MISSING
    spectrum: Optional[str] = MISSING
    standardize_phase: bool = MISSING


@dataclass
class ScheduleConfig:
    stages: int = MISSING
    steps: int = MISSING
    zoom: bool = MISSING
    centering: bool = MISSING
    lr: float = MISSING
    betas: List[float] = MISSING


@dataclass
class AdamParams:
    """conf/optimizer/adam.yaml and nadam.yaml: `_target_` is the torch.optim class, the other keys its
    arguments (lr and betas: the schedule's)."""
    _target_: str = MISSING
    lr: float = MISSING
    betas: List[float] = MISSING


@dataclass
class LossConfig:
    tv_weight: float = MISSING
    l2_weight: float = MISSING
    bn_weight: float = MISSING


@dataclass
class NoLoggerConfig:
    """conf/logger/none.yaml: `_target_` is the tracker class that tracks nothing (pii/run/tracking.py)."""
    _target_: str = MISSING


@dataclass
class WandbLoggerConfig:
    """conf/logger/wandb.yaml: `_target_` is the W&B tracker class, the other keys its arguments."""
    _target_: str = MISSING
    mode: str = MISSING
    project: str = MISSING
    entity: Optional[str] = MISSING
    group: Optional[str] = MISSING
    run_name: Optional[str] = MISSING
    tags: List[str] = MISSING
    init_timeout: float = MISSING


@dataclass
class RobustConfig:
    """conf/robust/: none (natural) | linf | l2, PGD adversarial training of the classifiers trained here."""
    norm: Optional[str] = MISSING
    epsilon: float = MISSING
    steps: int = MISSING
    step_size: float = MISSING
    warmup: float = MISSING
    eval_steps: int = MISSING
    tag: str = MISSING


@dataclass
class InvertConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    augmentation: Any = MISSING  # `chunk` and one transform per key, each a `_target_` or null (pii.run.build.augmentation)
    param: Any = MISSING  # each option's own schema (PixelParam, ...): its file's defaults name it
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    optimizer: Any = MISSING  # each option's own schema (AdamParams, ...): its file's defaults name it
    loss: LossConfig = field(default_factory=LossConfig)
    logger: Any = MISSING  # each option's own schema (NoLoggerConfig, WandbLoggerConfig): its file's defaults name it
    robust: RobustConfig = field(default_factory=RobustConfig)
    verifier: Dict[str, ModelConfig] = MISSING
    class_id: Any = MISSING
    classes_per_job: Optional[int] = MISSING
    class_chunk: Optional[int] = MISSING
    seed: int = MISSING
    device: str = MISSING
    precision: str = MISSING  # one of PRECISIONS, or AUTO
    channels_last: Any = MISSING  # true, false, or auto (pii.models.calibration)
    fold_batchnorm: bool = MISSING
    cudnn_benchmark: bool = MISSING
    compile: Any = MISSING  # true, false, or auto (pii.models.device.wants_compile)
    log_every: int = MISSING
    objective: Any = MISSING  # the terms' keys differ between options (conf/objective/)
    sweep_metric: str = MISSING
    method: str = MISSING  # the leaderboard's label of a method preset
    output_dir: str = MISSING
    resume: Optional[str] = MISSING
    init_from: Optional[str] = MISSING


STORE = ConfigStore.instance()
STORE.store(name="invert_schema", node=InvertConfig)
# a group option's own schema, named first in its file's defaults (`- /schema/param/fourier@_here_`)
for _name, _schema in (("pixel", PixelParam), ("fourier", FourierParam), ("maco", MacoParam)):
    STORE.store(group="schema/param", name=_name, node=_schema)
STORE.store(group="schema/optimizer", name="adam", node=AdamParams)
STORE.store(group="schema/logger", name="none", node=NoLoggerConfig)
STORE.store(group="schema/logger", name="wandb", node=WandbLoggerConfig)

DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class Problems(list):
    """The problems found in one config; raised together as one ConfigError line (a few, and a count)."""

    def at_least(self, cfg: DictConfig, key: str, low: float, strict: bool = False) -> None:
        value = cfg_get(cfg, key)
        if value is not None and (value <= low if strict else value < low):
            self.append(f"{key} must be {'>' if strict else '>='} {low:g}, got {value}")

    def at_most(self, cfg: DictConfig, key: str, high: float, why: str = "") -> None:
        value = cfg_get(cfg, key)
        if value is not None and value > high:
            self.append(f"{key} must be <= {high:g}{f' ({why})' if why else ''}, got {value}")

    def seed(self, cfg: DictConfig, key: str) -> None:
        """A random seed: what torch's and numpy's generators take."""
        value = cfg_get(cfg, key)
        if value is not None and not 0 <= value < SEED_LIMIT:
            self.append(f"{key} must be in [0, 2^32), got {value}")

    def finite(self, cfg: DictConfig) -> None:
        """Every float of the config is a number: nan and inf mean nothing as a setting."""
        def walk(value, key):
            if isinstance(value, dict):
                for name, item in value.items():
                    if name != "hydra":
                        walk(item, f"{key}.{name}" if key else str(name))
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    walk(item, f"{key}[{i}]")
            elif isinstance(value, float) and not math.isfinite(value):
                self.append(f"{key} must be a finite number, got {value}")

        walk(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False), "")

    def raise_any(self) -> None:
        if self:
            raise ConfigError(few(self, 4, "; ") if len(self) <= 4 else f"{len(self)} problems: {few(self, 3, '; ')}")


SEED_LIMIT = 2**32
MIN_STAGE_SIZE = 8  # px: the first stage's image; smaller holds too little for a classifier's first layers
MAX_IMAGE_LR = 10.0  # schedule.lr: a step of 10 crosses any parametrization's range (pixels, phases) several times


def cfg_get(cfg: DictConfig, key: str) -> Any:
    node = cfg
    for part in key.split("."):
        node = node.get(part) if node is not None else None
    return node


def check_betas(problems: Problems, key: str, betas) -> None:
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        problems.append(f"{key} must be two numbers in [0, 1), got {list(betas)}; e.g. {key}=[0.5,0.99]")


def check_device(problems: Problems, device: str) -> None:
    if not DEVICE.fullmatch(device):
        problems.append(f"unknown device {device!r}; use device=auto, device=cpu, device=cuda or device=cuda:<n>")


def check_model(problems: Problems, cfg: DictConfig, key: str) -> None:
    """A model config at `key` (model, or verifier.<name>)."""
    node = OmegaConf.select(cfg, key)
    if OmegaConf.is_dict(node) and "name" in node.keys() and OmegaConf.is_missing(node, "name"):
        problems.append(f"{key}.name is not set; e.g. {key}.name=resnet18 (any name from timm.list_models())")
    problems.at_least(cfg, f"{key}.input_size", 1)
    problems.at_least(cfg, f"{key}.num_classes", 1)
    for name in ("mean", "std"):
        values = cfg_get(cfg, f"{key}.{name}")
        if values is None:
            continue
        if len(values) != 3 or (name == "std" and min(values) <= 0) or (name == "mean" and not 0 <= min(values) <= max(values) <= 1):
            rule = "each > 0" if name == "std" else "each in [0, 1], as the pixels are"
            problems.append(f"{key}.{name} must be 3 numbers (R, G, B), {rule}, got {list(values)}")


def check_robust(problems: Problems, cfg: DictConfig, model_key: str | None) -> None:
    """The `robust` group; `model_key`: the model whose weights it picks (None: one trained in the run)."""
    robust = cfg.get("robust")
    if robust is None:
        return
    if not 0 <= robust.warmup <= 1:
        problems.append(f"robust.warmup must be a share of the training steps in [0, 1], got {robust.warmup}")
    if robust.norm is None:  # robust=none keeps its numbers at 0: a negative one is still a typo
        for key in ("epsilon", "step_size", "steps", "eval_steps"):
            problems.at_least(cfg, f"robust.{key}", 0)
        return
    for key in ("epsilon", "step_size"):
        problems.at_least(cfg, f"robust.{key}", 0, strict=True)
    for key in ("steps", "eval_steps"):
        problems.at_least(cfg, f"robust.{key}", 1)
    if robust.norm not in ROBUST_NORMS:
        problems.append(f"robust.norm must be one of {', '.join(ROBUST_NORMS)} (or robust=none), got {robust.norm!r}")
    if model_key and robust.tag not in str(cfg_get(cfg, f"{model_key}.weights")):
        # only the models trained here have a robust version to pick; it would be a silent no-op
        problems.append(f"robust={robust.norm} picks the robust weights of a digits model (model=digits_cnn, "
                        f"digits_vit, digits_mixer; their files end in {robust.tag}.pt), but {model_key}.weights is "
                        f"{cfg_get(cfg, f'{model_key}.weights')}; for an ImageNet model use model=resnet50_robust "
                        f"model.weights=<file>, and leave robust=none")


def check_invert(cfg: DictConfig) -> None:
    """Ranges and choices of an invert.py config (types are the schema's); ConfigError naming every bad key."""
    from pii.models.classes import job_classes

    problems = Problems()
    problems.finite(cfg)
    check_model(problems, cfg, "model")
    for name in cfg.get("verifier") or {}:
        check_model(problems, cfg, f"verifier.{name}")
    for key in ("schedule.stages", "schedule.steps", "log_every"):
        problems.at_least(cfg, key, 1)
    chunk = cfg.augmentation.chunk
    if chunk != "auto" and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        problems.append(f"augmentation.chunk must be auto or a number of views >= 1, got {chunk!r}; "
                        f"e.g. augmentation.chunk=64")
    if cfg.sweep_metric not in SWEEP_METRICS:
        problems.append(f"sweep_metric must be one of {', '.join(SWEEP_METRICS)}, got {cfg.sweep_metric!r}")
    if cfg.compile not in (True, False, "auto"):
        problems.append(f"compile must be true, false or auto, got {cfg.compile!r}")
    for key in ("loss.tv_weight", "loss.l2_weight", "loss.bn_weight", "param.decay"):
        problems.at_least(cfg, key, 0)
    for key in ("schedule.lr", "logger.init_timeout", "param.sd"):
        problems.at_least(cfg, key, 0, strict=True)
    problems.at_most(cfg, "schedule.lr", MAX_IMAGE_LR, "Adam moves each parameter by about lr a step; pixels span 1, "
                     "phases 2 pi")
    problems.seed(cfg, "seed")
    check_betas(problems, "schedule.betas", cfg.schedule.betas)
    check_device(problems, cfg.device)
    if cfg.precision not in (*PRECISIONS, AUTO):
        problems.append(f"precision must be {', '.join(PRECISIONS)} or {AUTO}, got {cfg.precision!r}")
    if cfg.channels_last not in (True, False, "auto"):
        problems.append(f"channels_last must be true, false or auto, got {cfg.channels_last!r}")
    if cfg.get("resume") and cfg.get("init_from"):
        problems.append("resume= and init_from= exclude each other: resume continues a run, init_from starts a new one")
    check_robust(problems, cfg, "model")
    _objective(problems, cfg)
    problems.raise_any()
    # after the model's num_classes is known to be sane; a unit objective's targets are its units
    if cfg.objective.get("units") is None:
        job_classes(cfg.class_id, cfg.model.num_classes, cfg.get("classes_per_job"), cfg.get("class_chunk"))
    else:
        parse_units(cfg.objective.units)
    # last, once the cheap checks pass: loading a target imports its module (torch)
    target(cfg.param, "param", "batch", "device")
    target(cfg.optimizer, "optimizer", "params")
    for name, node in cfg.objective.terms.items():
        if node is not None:
            target(node, f"objective.terms.{name}")
    transforms(cfg)  # each transform checks its arguments as it is made


def check_stages(cfg: DictConfig, sizes: list[int]) -> None:
    """The stage sizes the schedule gives for the model (pii.run.build.stages, which needs timm's
    defaults for the model's size): each stage grows the image, from at least MIN_STAGE_SIZE px;
    augmentation.shift crops `pixels` px off each view, so it must leave some of the first stage."""
    problems = Problems()
    if len(set(sizes)) < len(sizes) or sizes[0] < MIN_STAGE_SIZE:
        problems.append(f"schedule.stages={cfg.schedule.stages} gives stages of {few(sizes, 4)} px for a {sizes[-1]} px "
                        f"image: each stage must grow the image, from at least {MIN_STAGE_SIZE} px; use fewer stages")
    shift = OmegaConf.select(cfg, "augmentation.shift.pixels") or 0
    if shift >= sizes[0]:
        problems.append(f"augmentation.shift.pixels={shift} crops the whole first stage ({sizes[0]} px) away; "
                        f"use augmentation.shift.pixels < {sizes[0]}")
    problems.raise_any()


REAL_IMAGES = ("digits",)  # objective.real_images: pii.run.build.real_images


def _objective(problems: Problems, cfg: DictConfig) -> None:
    """The objective's numbers. A term's weight may be negative (a channel minus another); the
    priors' weights are the `loss` group's, checked there."""
    problems.at_least(cfg, "objective.images_per_target", 1)
    if cfg.objective.get("real_images") not in (None, *REAL_IMAGES):
        problems.append(f"objective.real_images must be null or {', '.join(REAL_IMAGES)} (the real images a unit's "
                        f"activation is compared with), got {cfg.objective.real_images!r}")
    for name, node in (cfg.objective.get("terms") or {}).items():
        if node is None:
            continue
        for key, low in (("unit", 0), ("cossim_power", 0), ("class_id", 0)):
            if key in node:
                problems.at_least(cfg, f"objective.terms.{name}.{key}", low)


def parse_units(value) -> list[int]:
    """objective.units: a unit, a list of them, or first:N (units 0 .. N-1)."""
    if isinstance(value, str) and value.startswith("first:") and value[6:].isdigit() and int(value[6:]) >= 1:
        return list(range(int(value[6:])))
    items = list(value) if OmegaConf.is_list(value) or isinstance(value, list) else [value]
    if not items or not all(isinstance(u, int) and not isinstance(u, bool) and u >= 0 for u in items):
        raise ConfigError(f"objective.units must be unit numbers >= 0: a list such as [0,5,9], or first:N, "
                          f"got {value!r}")
    return [int(u) for u in items]


def options(group: str, root: str = CONF_DIR) -> list[str]:
    """The options of a config group: the YAML files of its folder."""
    return sorted(p.stem for p in (Path(root) / group).glob("*.yaml"))


def target(node: DictConfig, key: str, *runtime: str, root: str = CONF_DIR) -> functools.partial:
    """What the config node at `key` builds: the class or function its `_target_` names, with the
    node's other keys as arguments (Hydra's instantiate, `_partial_`), all but `name`, a label for
    logs and tables, and keys with no value (`???`). The caller adds the `runtime` arguments (param: batch and device). A
    `_target_` that cannot be loaded, a key it has no argument for, or an argument neither gives
    is a one-line ConfigError."""
    import inspect

    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    names = options(key, root)
    choices = f"use {key}=<{'|'.join(names)}>" if names else f"name the class in {key}._target_"
    if not node.get("_target_"):
        raise ConfigError(f"{key} has no _target_ (the class or function it builds); {choices}")
    try:
        values = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
                  if k != "name" and not OmegaConf.is_missing(node, k)}
        make = instantiate(values, _partial_=True, _convert_="all")
        inspect.signature(make.func).bind(*make.args, **dict.fromkeys(runtime), **make.keywords)
    except InstantiationException as err:
        raise ConfigError(f"{key}._target_={node._target_!r} cannot be loaded "
                          f"({type(err.__cause__ or err).__name__}); {choices}") from None
    except TypeError as err:  # a key the target has no argument for, or one it needs that is missing
        if unset := [k for k in node if OmegaConf.is_missing(node, k)]:  # `???` in the YAML: the user's to give
            raise ConfigError(f"{key}.{unset[0]} has no value ({node._target_} needs it); pass "
                              f"{key}.{unset[0]}=<value>") from None
        raise ConfigError(f"{key} ({node._target_}): {err}") from None
    return make


# The augmentation's keys before each transform was a class of its own key: old key -> (the transform's
# key, its class in pii.core.augment, the argument the old key set; None: the old key switched it).
OLD_AUGMENTATION_KEYS = {
    "ensemble_size": ("ensemble", "Ensemble", "size"), "jitter": ("jitter", "Jitter", "max_shift"),
    "alpha": ("color_shift", "ColorShift", "alpha"), "beta": ("color_shift", "ColorShift", "beta"),
    "color_shift": ("color_shift", "ColorShift", None), "flip": ("flip", "Flip", None),
    "pad": ("pad", "Pad", "pixels"), "shift": ("shift", "Shift", "pixels"), "crops": ("ensemble", "Crops", "box"),
    "crop_centre_std": ("ensemble", "Crops", "centre_std"), "scale": ("scale_rotate", "ScaleRotate", "scale"),
    "degrees": ("scale_rotate", "ScaleRotate", "degrees"), "noise": ("noise", "Noise", "std"),
}
OFF = {"0", "0.0", "false", "False", "null", "None"}
SCALAR = re.compile(r"-?[\d.]+(e-?\d+)?|true|false|True|False")  # what the flat keys held (a sweep: several)


def old_augmentation_key(name: str, value: str) -> str | None:
    """Where `augmentation.<name>=<value>` of the flat keys went, said in words; None where it is a
    current key (a transform, null, or one of its arguments)."""
    if name not in OLD_AUGMENTATION_KEYS:
        return None
    key, cls, argument = OLD_AUGMENTATION_KEYS[name]
    if key == name and not all(SCALAR.fullmatch(item.strip()) for item in value.split(",")):
        return None  # the transform's own key as it is now: a mapping or null
    if name == "crops" and value in OFF:
        new = (f"augmentation.ensemble=null 'augmentation.ensemble={{_target_:pii.core.augment.Ensemble,size:<n>}}' "
               f"(plain copies in place of the crops)")
    elif key == name and value in OFF:
        new = f"augmentation.{key}=null (off)"
    elif argument is None:
        example = {"flip": "p:0.5", "color_shift": "alpha:1.0,beta:1.0"}[name]
        new = f"'augmentation.{key}={{_target_:pii.core.augment.{cls},{example}}}'"
    else:
        new = f"augmentation.{key}.{argument}={value} (pii.core.augment.{cls}'s {argument})"
    return (f"an old key: the augmentations are now one key each, a transform (_target_ and its arguments) or null, "
            f"in conf/augmentation/pii.yaml; use {new}")


def transform(node, key: str):
    """The transform the augmentation's `key` names (a mapping with `_target_`), built: a value that
    is not one (an old flat key, a number), a `_target_` that cannot be loaded, an argument it has
    no parameter for or one outside its range is a one-line ConfigError naming `key`."""
    if not OmegaConf.is_dict(node):
        old = old_augmentation_key(key.rpartition(".")[2], str(node))
        raise ConfigError(f"{key}={node}: {old}" if old else
                          f"{key} must be a transform ({{_target_: <class>, <its arguments>}}) or null (off), "
                          f"got {node!r}; e.g. conf/augmentation/pii.yaml")
    make = target(node, key)
    try:
        return make()
    except ValueError as err:  # an argument outside what it means, named first (pii.core.augment.require)
        raise ConfigError(f"{key}.{err} ({node._target_})") from None


def transforms(cfg: DictConfig) -> list:
    """The `augmentation` group's transforms, built in the order of its keys (conf/augmentation/pii.yaml):
    every key but `chunk` (views per forward pass: pii.core.inversion.invert) that is not null."""
    return [transform(node, f"augmentation.{name}") for name, node in cfg.augmentation.items()
            if name != "chunk" and node is not None]
