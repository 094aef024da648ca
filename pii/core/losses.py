"""DeepInversion's BatchNorm-statistics penalty, read by the objective's `batchnorm` term
(pii.core.objectives.BatchNorm)."""

from __future__ import annotations

import torch
from torch import nn

from pii.errors import ConfigError


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
