"""The augmentations of PII (paper Section 3): small pieces with one signature,
`views = piece(views)`, composed in order. Each is drawn afresh at every call."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn



class Jitter(nn.Module):
    """Roll the batch by one random offset in [-max_shift, max_shift] per axis, wrapping around."""

    def __init__(self, max_shift: int):
        super().__init__()
        self.max_shift = max_shift

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dy, dx = torch.randint(-self.max_shift, self.max_shift + 1, (2,)).tolist()
        return torch.roll(x, shifts=(dy, dx), dims=(-2, -1))


class Ensemble(nn.Module):
    """Repeat each image `size` times, copies of one image next to each other."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.repeat_interleave(self.size, dim=0)


class Flip(nn.Module):
    """Mirror each copy left-right with probability p."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flip = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-1), x)


class ColorShift(nn.Module):
    """x' = sigma * x + mu per copy and channel, mu ~ U(-alpha, alpha), sigma = exp(U(-beta, beta)).

    Applied to [0, 1] pixels before the model's normalisation, and not clamped.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[0], x.shape[1], 1, 1)
        mu = (torch.rand(shape, device=x.device) * 2 - 1) * self.alpha
        sigma = torch.exp((torch.rand(shape, device=x.device) * 2 - 1) * self.beta)
        return sigma * x + mu


def build(cfg: DictConfig) -> nn.Sequential:
    """Jitter, ensemble, flip and ColorShift, each switchable, in the paper's order."""
    ensemble_size = int(cfg.ensemble_size)  # ranges: pii.config.check_invert
    pieces: list[nn.Module] = []
    if cfg.jitter > 0:
        pieces.append(Jitter(int(cfg.jitter)))
    pieces.append(Ensemble(ensemble_size))
    if cfg.flip:
        pieces.append(Flip())
    if cfg.color_shift and (cfg.alpha > 0 or cfg.beta > 0):
        pieces.append(ColorShift(float(cfg.alpha), float(cfg.beta)))
    return nn.Sequential(*pieces)
