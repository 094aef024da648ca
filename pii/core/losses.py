"""Inversion losses: cross-entropy, plus optional image priors (total
variation, L2) and DeepInversion's BatchNorm-statistics penalty."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pii.errors import ConfigError


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels."""
    dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean()
    dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean()
    return dy + dx


class BatchNormStatistics:
    """DeepInversion's feature prior (Yin et al., 2020): the distance of each
    BatchNorm layer's batch statistics from its running statistics,
    sum over layers of ||mean - running_mean||_2 + ||var - running_var||_2.

    Forward hooks on every BatchNorm layer keep the last forward pass's
    distances; `penalty()` sums them. The classifier stays in eval mode, so
    the hooks only look: the model's outputs are unchanged.
    """

    def __init__(self, model: nn.Module):
        self.layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not self.layers:
            name = getattr(model, "name", type(model).__name__)
            raise ConfigError(
                f"loss=deepinversion needs a model with BatchNorm layers, and {name} has none (its penalty pulls "
                f"BatchNorm statistics towards their running values); use loss=cross_entropy or loss=tv, "
                f"or a BatchNorm CNN such as model=efficientnet_lite0 or model=resnet50")
        self.distances: dict[int, torch.Tensor] = {}
        self.handles = [layer.register_forward_hook(self._hook(i)) for i, layer in enumerate(self.layers)]

    def _hook(self, index: int):
        def hook(layer: nn.modules.batchnorm._BatchNorm, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0].float()
            dims = [0] + list(range(2, x.dim()))
            mean, var = x.mean(dims), x.var(dims, unbiased=False)
            # overwrite, not append: only the latest forward pass counts
            self.distances[index] = (torch.linalg.vector_norm(mean - layer.running_mean)
                                     + torch.linalg.vector_norm(var - layer.running_var))
        return hook

    def penalty(self) -> torch.Tensor:
        return torch.stack(list(self.distances.values())).sum()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


class InversionLoss(nn.Module):
    """Cross-entropy of every augmented view against its class, plus
    tv_weight * TV(image) + l2_weight * mean ||image||_2 + bn_weight * BatchNorm penalty."""

    def __init__(self, tv_weight: float, l2_weight: float, bn_weight: float,
                 bn_stats: BatchNormStatistics | None = None):
        super().__init__()
        self.tv_weight, self.l2_weight, self.bn_weight, self.bn_stats = tv_weight, l2_weight, bn_weight, bn_stats

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return self.views_loss(logits, targets) + self.image_loss(image)

    def views_loss(self, logits: torch.Tensor, targets: torch.Tensor, total: int | None = None) -> torch.Tensor:
        """Cross-entropy of these views; `total` views in all: this chunk's share of the mean over all."""
        total = total or len(targets)
        return F.cross_entropy(logits, targets, reduction="sum") / total

    def image_loss(self, image: torch.Tensor) -> torch.Tensor:
        """The priors on the image itself, and the BatchNorm penalty of the last forward pass."""
        loss = image.new_zeros(())
        if self.tv_weight:
            loss = loss + self.tv_weight * total_variation(image)
        if self.l2_weight:
            loss = loss + self.l2_weight * image.flatten(1).norm(dim=1).mean()
        if self.bn_weight:
            loss = loss + self.bn_weight * self.bn_stats.penalty()
        return loss

    @property
    def splits_over_views(self) -> bool:
        """Whether the loss of all views is the sum of the losses of chunks of them: not with the
        BatchNorm penalty, whose batch statistics are over all views at once."""
        return not self.bn_weight


def reads_batchnorm(bn_weight: float) -> bool:
    """Whether a loss with this `bn_weight` reads the classifier's BatchNorm layers (DeepInversion's
    penalty), which must then stay unfolded (pii.models.fold_batchnorm)."""
    return float(bn_weight) > 0


def build(classifier: nn.Module, *, tv_weight: float, l2_weight: float, bn_weight: float) -> InversionLoss:
    """The `loss` config group's keys (conf/loss/): the weights of the priors next to cross-entropy."""
    weights = {"tv_weight": float(tv_weight), "l2_weight": float(l2_weight), "bn_weight": float(bn_weight)}
    for key, value in weights.items():
        if value < 0:
            raise ConfigError(f"loss.{key} must be >= 0, got {value}")
    bn_stats = BatchNormStatistics(classifier) if reads_batchnorm(bn_weight) else None
    return InversionLoss(**weights, bn_stats=bn_stats)
