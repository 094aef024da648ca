"""The one builder: an invert.py config becomes every piece of an inversion run (pii.core's plain
arguments). The runner, the speed benchmark, the digits driver and the scripts all build here, so
that what they run or time is what the config names.

A group that picks a class (param, optimizer) names it in `_target_` and is built by Hydra's
instantiate (pii.run.config.target); the others are the keyword arguments of one builder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import nn

from pii import models
from pii.core import augment, schedule
from pii.core.inversion import invert
from pii.core.objectives import Objective
from pii.core.observers import Observer
from pii.core.param import Param
from pii.core.schedule import Stage
from pii.models import calibration
from pii.errors import ConfigError
from pii.models import device as device_policy
from pii.models import layers
from pii.models import photos
from pii.models.classes import job_classes
from pii.run.config import parse_units, target, transforms


def stages(cfg: DictConfig) -> list[Stage]:
    """The stages of an inversion run of `cfg`: its schedule, growing to its model's input size."""
    s = cfg.schedule
    return schedule.plan(models.model_spec(cfg.model)["input_size"], stages=s.stages, steps=s.steps, zoom=s.zoom,
                         centering=s.centering)


def augmentation(cfg: DictConfig) -> augment.Augmentation:
    """The `augmentation` group's transforms in the order of its keys (pii.run.config.transforms): each
    key but `chunk` is a class named by `_target_` with its arguments, or null (off)."""
    return augment.Augmentation(*transforms(cfg))


def loss(cfg: DictConfig, classifier: nn.Module, image_targets: list[int] | None = None) -> Objective:
    """The `objective` group's weighted terms on `classifier`: each term's layer resolved and its
    layout found (pii.models.layers), its units and vector checked against it, and the images'
    targets (`targets`, unless the caller has them) against the layer, before anything runs."""
    terms = [target(node, f"objective.terms.{name}")() for name, node in cfg.objective.terms.items()
             if node is not None]
    if not unit_targets(cfg):
        return layers.objective(terms, classifier, None)
    return layers.objective(terms, classifier, image_targets or targets(cfg, classifier.num_classes))


def unit_targets(cfg: DictConfig) -> bool:
    """Whether the images are made for units (objective.units), not for classes (class_id)."""
    return cfg.objective.get("units") is not None


def targets(cfg: DictConfig, num_classes: int) -> list[int]:
    """What this run's images are made for, objective.images_per_target each, side by side: the
    job's classes, or objective.units (a list, or first:N)."""
    per_target = cfg.objective.get("images_per_target", 1)
    if isinstance(per_target, bool) or not isinstance(per_target, int) or per_target < 1:
        raise ConfigError(f"objective.images_per_target must be a number >= 1, got {per_target!r}")
    if not unit_targets(cfg):
        ids = job_classes(cfg.class_id, num_classes, cfg.get("classes_per_job"), cfg.get("class_chunk"))
    else:
        ids = parse_units(cfg.objective.units)
    return [i for i in ids for _ in range(per_target)]


def photo(cfg: DictConfig, size: int, device: torch.device | str) -> torch.Tensor | None:
    """objective.photo (feature accentuation: the images start from it, and its Near term keeps them
    near it) as (1, 3, size, size) pixels: the centre square, resized; None when not set."""
    from pii.eval.judge import resize
    from pii.files import read_png

    path = cfg.objective.get("photo")
    if not path:
        return None
    image = read_png(Path(str(path)).expanduser())
    side = min(image.shape[-2:])
    top, left = (image.shape[-2] - side) // 2, (image.shape[-1] - side) // 2
    return resize(image[None, :, top:top + side, left:left + side], size).to(device)


def optimizer(cfg: DictConfig) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    """The `optimizer` group's class with its settings: called with the parameters at each stage."""
    return target(cfg.optimizer, "optimizer", "params")


def param(cfg: DictConfig, batch: int, device: torch.device | str) -> Param:
    """The `param` group's parametrization of `batch` images on `device`."""
    make = target(cfg.param, "param", "batch", "device")
    if cfg.param.get("spectrum") == photos.PHOTOS:  # a magnitude made from photos, not a file
        return make(batch=batch, device=device, spectrum=photos.photo_spectrum())
    return make(batch=batch, device=device)


def real_images(cfg: DictConfig, size: int) -> torch.Tensor | None:
    """objective.real_images at `size` px: the real images of the model's data that a unit run's
    images are measured against (pii.eval.units); None where it names none."""
    if cfg.objective.get("real_images") != "digits":
        return None
    from pii.eval.judge import resize
    from pii.models.digits import digits_split

    return resize(digits_split()[1][0], size)


def device_settings(cfg: DictConfig, device: torch.device, run_stages: list[Stage], views: int,
                    needs: layers.Needs, seconds_per_view=None) -> calibration.DeviceSettings:
    """`precision`, `channels_last` and `augmentation.chunk` for a run of `cfg` with `views` views per
    step: as set, and each `auto` one by the device policy (CUDA) or a calibration of this classifier
    on this CPU (pii.models.calibration; `seconds_per_view` replaces its timer in tests). `needs`: the
    objective's (pii.models.layers.needs)."""
    fold = bool(cfg.fold_batchnorm) and not needs.batchnorm
    model = f"{cfg.model.name} ({cfg.model.get('weights')}{', BatchNorm folded' if fold else ''})"
    # the calibration builds and runs models (random draws) only when nothing is cached: its draws must
    # not move the run's, or a run would differ from its own resumed or repeated self
    with torch.random.fork_rng(devices=[]):
        return calibration.settle(
            str(cfg.precision), cfg.channels_last, cfg.augmentation.get("chunk", "auto"), device, model, run_stages,
            views, lambda precision, channels_last: models.build(cfg.model, device, precision=precision,
                                                                 channels_last=channels_last, compile=False, fold=fold),
            splits=needs.splits, seconds_per_view=seconds_per_view)


def classifier(cfg: DictConfig, device: torch.device, run_stages: list[Stage], views: int,
               device_choice: calibration.DeviceSettings, needs: layers.Needs) -> tuple[models.Classifier, bool]:
    """The classifier a run of `cfg` optimises against, and whether it is compiled: the precision and
    channels_last of `device_choice`, compiled where `compile` asks or (auto) where it pays for the
    stages and views (pii.models.device.wants_compile); never where a term reads a layer (forward
    hooks, one of which may stop the pass); BatchNorm folded unless a term reads it (`needs`)."""
    spec = models.model_spec(cfg.model)
    compiled = not needs.layers and device_policy.wants_compile(
        cfg.compile, device, run_stages, views, fixed_size=spec["input_size"] if spec["fixed_size"] else None)
    return models.build(cfg.model, device, precision=device_choice.precision,
                        channels_last=device_choice.channels_last, compile=compiled,
                        fold=bool(cfg.fold_batchnorm) and not needs.batchnorm), compiled


@dataclass
class Pieces:
    """Every piece of an inversion run of `cfg`, as pii.core.inversion.invert takes them."""

    cfg: DictConfig
    device: torch.device
    targets: list[int]  # what each image is made for: a class, or a unit (objective.units)
    stages: list[Stage]
    settings: calibration.DeviceSettings | None  # None: a classifier handed in, run as it is (all views at once)
    classifier: models.Classifier
    compiled: bool
    augment: augment.Augmentation
    loss: Objective
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer]
    log_every: int
    photo: torch.Tensor | None  # objective.photo, where the images start and what the Near terms keep them near
    real: torch.Tensor | None  # objective.real_images, what a unit run's images are measured against

    @property
    def unit_run(self) -> bool:
        """The images are made for units, not classes."""
        return unit_targets(self.cfg)

    def param(self, batch: int) -> Param:
        """A fresh parametrization of `batch` images (the `param` group's)."""
        return param(self.cfg, batch, self.device)

    def chunk(self) -> Callable[[int, int], int] | None:
        """Views per forward pass at each stage (pii.models.device.views_per_chunk); None: all at once."""
        return None if self.settings is None else partial(device_policy.views_per_chunk, self.settings.chunk,
                                                          self.classifier)

    def invert(self, class_ids: list[int], observer: Observer | None = None, image_param: Param | None = None,
               first_stage: int = 0, run_stages: list[Stage] | None = None) -> torch.Tensor:
        """pii.core.inversion.invert with these pieces: one image per class of `class_ids`."""
        return invert(self.classifier, class_ids, self.augment, run_stages or self.stages, self.loss,
                      self.make_optimizer, observer, None, first_stage, log_every=self.log_every,
                      chunk=self.chunk(), param=image_param or self.param(len(class_ids)), seed=int(self.cfg.seed))


def pieces(cfg: DictConfig, device: torch.device | None = None, image_targets: list[int] | None = None,
           given: models.Classifier | None = None) -> Pieces:
    """Every piece of a run of `cfg`, in the order each needs the last: what its images are made for
    (`image_targets`, else `targets`), its stages, optimiser and augmentation, the device (`device`,
    else cfg.device resolved), the device settings (precision, memory format, chunk: as set, or
    settled on this machine, and the chunk planned to fit the memory: pii.models.device.fit_memory),
    the classifier (or `given`, used as it is, all views at once), the loss (anchored to
    objective.photo where set) and the real images units are measured against. The param is made
    per batch (`Pieces.param`): a run may load a checkpoint's state into it first."""
    if image_targets is None:
        image_targets = targets(cfg, int(cfg.model.num_classes))
    run_stages, make_optimizer, augment_views = stages(cfg), optimizer(cfg), augmentation(cfg)
    if device is None:
        device = device_policy.resolve_device(str(cfg.device), bool(cfg.cudnn_benchmark))
    views = len(image_targets) * augment_views.copies
    if given is None:
        needs = layers.needs(cfg.objective)
        device_choice = device_settings(cfg, device, run_stages, views, needs)
        net, compiled = classifier(cfg, device, run_stages, views, device_choice, needs)
    else:
        device_choice, net, compiled = None, given, False
    objective = loss(cfg, net, image_targets)
    if device_choice is not None:
        device_choice.chunk = device_policy.fit_memory(device_choice.chunk, cfg.augmentation.chunk, net, augment_views,
                                                       image_targets, run_stages[-1].size,
                                                       objective.splits_over_views, device)
    start = photo(cfg, net.input_size, device)
    if start is not None:
        objective.anchor(start)
    return Pieces(cfg, device, image_targets, run_stages, device_choice, net, compiled, augment_views, objective,
                  make_optimizer, log_every=int(cfg.log_every), photo=start, real=real_images(cfg, net.input_size))
