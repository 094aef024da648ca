"""A BigGAN-style generator conditioned on a classifier's logit vector.

Where BigGAN embeds a one-hot class, this generator standardises the logit
vector (or its softmax, or a one-hot of its top-1 class for the baseline) and
maps it with a learned linear layer; every conditional batch norm takes its
gains and biases from a linear map of that embedding (concatenated with a
chunk of the noise when `hierarchical`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from pii.errors import ConfigError

CONDITIONS = ("logits", "softmax", "onehot")
RGB = 3  # G's images and D's inputs: the data (pii.feedforward.data) and the classifiers are RGB


def sn(module: nn.Module, enabled: bool = True) -> nn.Module:
    return spectral_norm(module) if enabled else module


def stage_channels(width: int, depth: int, max_mult: int) -> list[int]:
    """Channels at each resolution, widest first: width * 2^(depth-i), capped at width * max_mult."""
    return [width * min(2 ** (depth - i), max_mult) for i in range(depth + 1)]


def depth_for(resolution: int, base: int) -> int:
    """How many doubling blocks turn a base x base map into resolution x resolution; ConfigError if none."""
    depth = math.log2(resolution / base) if resolution > 0 and base > 0 else -1
    if depth < 1 or depth != int(depth):
        raise ConfigError(
            f"generator.resolution={resolution} cannot be made from a {base}x{base} base by doubling; "
            f"use base*2^k, e.g. {', '.join(str(base * 2 ** k) for k in (3, 4, 5))}")
    return int(depth)


class Condition(nn.Module):
    """Turns raw logits into the conditioning vector: standardised logits, softmax(logits / T), or one-hot top-1."""

    def __init__(self, num_classes: int, mode: str, temperature: float):
        super().__init__()
        if mode not in CONDITIONS:
            raise ConfigError(f"condition {mode!r} unknown; use one of {', '.join(CONDITIONS)}")
        self.mode, self.temperature, self.num_classes = mode, float(temperature), num_classes
        # Per-logit statistics of the training set, set once by `fit`; saved with G.
        self.register_buffer("mean", torch.zeros(num_classes))
        self.register_buffer("std", torch.ones(num_classes))

    @torch.no_grad()
    def fit(self, logits: torch.Tensor) -> None:
        if self.mode == "logits":
            self.mean.copy_(logits.mean(0))
            self.std.copy_(logits.std(0).clamp_min(1e-3))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mode == "onehot":
            return F.one_hot(logits.argmax(-1), self.num_classes).float()
        if self.mode == "softmax":
            return (logits / self.temperature).softmax(-1)
        return (logits - self.mean) / self.std


class ConditionalBatchNorm(nn.Module):
    """Batch norm without affine weights; gain and bias are linear functions of the condition."""

    def __init__(self, channels: int, cond_dim: int, use_sn: bool = True):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        # gains and biases from one linear layer (half the spectral-norm work of two)
        self.affine = sn(nn.Linear(cond_dim, 2 * channels, bias=False), use_sn)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain, bias = self.affine(cond)[:, :, None, None].chunk(2, dim=1)
        return self.bn(x) * (1 + gain) + bias


class GBlock(nn.Module):
    """BigGAN residual up-block: CBN-ReLU-up-conv-CBN-ReLU-conv, plus an upsampled 1x1 skip."""

    def __init__(self, cin: int, cout: int, cond_dim: int, use_sn: bool = True):
        super().__init__()
        self.bn1, self.bn2 = ConditionalBatchNorm(cin, cond_dim, use_sn), ConditionalBatchNorm(cout, cond_dim, use_sn)
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, padding=1), use_sn)
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, padding=1), use_sn)
        self.skip = sn(nn.Conv2d(cin, cout, 1), use_sn)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, cond)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), cond)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    """G(logits, z) -> images in [0, 1] of size resolution x resolution."""

    def __init__(self, num_classes: int, *, resolution: int, base: int, width: int, max_mult: int, z_dim: int,
                 embed_dim: int, hierarchical: bool, spectral_norm: bool, condition: str, temperature: float):
        super().__init__()
        depth = depth_for(resolution, base)
        self.resolution, self.base, self.z_dim, self.hierarchical = resolution, base, z_dim, hierarchical
        chans = stage_channels(width, depth, max_mult)
        # Hierarchical z: one chunk for the first linear layer and one per block (BigGAN).
        self.z_chunk = z_dim // (depth + 1) if hierarchical else z_dim
        if self.z_chunk < 1:
            raise ConfigError(f"generator.z_dim={z_dim} is too small to split over {depth + 1} levels; raise it")
        cond_dim = embed_dim + (self.z_chunk if hierarchical else 0)
        self.condition = Condition(num_classes, condition, temperature)
        self.embed = nn.Linear(num_classes, embed_dim, bias=False)  # the learned linear map of the logits
        self.linear = sn(nn.Linear(self.z_chunk, chans[0] * base * base), spectral_norm)
        self.blocks = nn.ModuleList(GBlock(chans[i], chans[i + 1], cond_dim, spectral_norm) for i in range(depth))
        self.out_bn = nn.BatchNorm2d(chans[-1])
        self.out_conv = sn(nn.Conv2d(chans[-1], RGB, 3, padding=1), spectral_norm)

    def sample_z(self, n: int, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
        return torch.randn(n, self.z_dim, generator=generator).to(device or self.embed.weight.device)

    def forward(self, logits: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        """`z=None` means z=0: the mean reconstruction, used for evaluation."""
        if z is None:
            z = torch.zeros(len(logits), self.z_dim, device=logits.device)
        e = self.embed(self.condition(logits))
        chunks = z[:, : self.z_chunk * (len(self.blocks) + 1)].split(self.z_chunk, dim=1) if self.hierarchical \
            else [z] + [None] * len(self.blocks)
        h = self.linear(chunks[0]).view(len(z), -1, self.base, self.base)
        for block, chunk in zip(self.blocks, chunks[1:]):
            h = block(h, e if chunk is None else torch.cat([e, chunk], 1))
        return (torch.tanh(self.out_conv(F.relu(self.out_bn(h)))) + 1) / 2
