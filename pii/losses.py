"""Inversion losses: cross-entropy, plus an optional total-variation prior."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from pii.errors import ConfigError

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dy + dx


class InversionLoss(nn.Module):
    """Cross-entropy of every augmented view against its class, plus tv_weight * TV(image)."""

    def __init__(self, tv_weight: float = 0.0):
        super().__init__()
        self.tv_weight = tv_weight

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits, targets)
        if self.tv_weight:
            loss = loss + self.tv_weight * total_variation(image)
        return loss


def build(cfg: DictConfig, classifier: nn.Module) -> Loss:
    tv_weight = float(cfg.get("tv_weight", 0.0))
    if tv_weight < 0:
        raise ConfigError(f"loss.tv_weight must be >= 0, got {tv_weight}")
    return InversionLoss(tv_weight)
