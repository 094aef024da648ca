"""The algorithm's pieces (pii.core) built from an invert.py config: where config keys become the
plain arguments pii.core takes. A group that picks a class (param, optimizer) names it in
`_target_` and is built by Hydra's instantiate (pii.run.config.target); the others are the
keyword arguments of one builder."""

from __future__ import annotations

from collections.abc import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pii.core import augment, losses
from pii.core.losses import InversionLoss
from pii.core.param import Param
from pii.run.config import target


def settings(node: DictConfig, *leave_out: str) -> dict:
    """A config group's keys as plain Python values (lists, not ListConfig), but `leave_out`."""
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k not in leave_out}


def augmentation(cfg: DictConfig) -> augment.Augmentation:
    # `chunk` is how many views go through the model at once (pii.core.inversion.invert), not a piece
    return augment.build(**settings(cfg.augmentation, "chunk"))


def loss(cfg: DictConfig, classifier: nn.Module) -> InversionLoss:
    return losses.build(classifier, **settings(cfg.loss))


def optimizer(cfg: DictConfig) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    """The `optimizer` group's class with its settings: called with the parameters at each stage."""
    return target(cfg.optimizer, "optimizer", "params")


def param(cfg: DictConfig, batch: int, device: torch.device | str) -> Param:
    """The `param` group's parametrization of `batch` images on `device`."""
    return target(cfg.param, "param", "batch", "device")(batch=batch, device=device)
