"""A projection discriminator (Miyato & Koyama 2018) conditioned on the same vector as G.

D(x, c) = psi(phi(x)) + <embed(c), phi(x)>: the conditioning vector c (the
generator's standardised logits, or one-hot for the baseline) enters through an
inner product with the pooled features, so D judges whether x fits its logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pii.feedforward.generator import RGB, depth_for, sn, stage_channels


class DBlock(nn.Module):
    """Residual down-block; the first block skips the leading ReLU (it sees pixels)."""

    def __init__(self, cin: int, cout: int, down: bool = True, first: bool = False, use_sn: bool = True):
        super().__init__()
        self.conv1 = sn(nn.Conv2d(cin, cout, 3, padding=1), use_sn)
        self.conv2 = sn(nn.Conv2d(cout, cout, 3, padding=1), use_sn)
        self.skip = sn(nn.Conv2d(cin, cout, 1), use_sn)
        self.down, self.first = down, first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.first else F.relu(x)
        h = self.conv2(F.relu(self.conv1(h)))
        s = self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class ProjectionDiscriminator(nn.Module):
    def __init__(self, cond_dim: int, *, resolution: int, base: int, width: int, max_mult: int, spectral_norm: bool):
        super().__init__()
        depth = depth_for(resolution, base)
        chans = list(reversed(stage_channels(width, depth, max_mult)))
        self.blocks = nn.Sequential(
            DBlock(RGB, chans[0], down=True, first=True, use_sn=spectral_norm),
            *(DBlock(chans[i - 1], chans[i], down=True, use_sn=spectral_norm) for i in range(1, depth)),
            DBlock(chans[depth - 1], chans[depth], down=False, use_sn=spectral_norm))
        self.out = sn(nn.Linear(chans[depth], 1), spectral_norm)
        self.embed = sn(nn.Linear(cond_dim, chans[depth], bias=False), spectral_norm)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x * 2 - 1)).sum(dim=(2, 3))  # global sum pooling
        return self.out(h).squeeze(1) + (self.embed(cond) * h).sum(1)
