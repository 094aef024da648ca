"""sklearn's 8x8 digits, which ship offline, upscaled to 32 px and 3 channels, and the training of a
small classifier on them through pii's Classifier (the same normalisation and resizing that
inversion sees)."""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pii import models
from pii.models.robust import PGD

log = logging.getLogger(__name__)

SIZE = 32


def load_digits(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as [N, 3, size, size] pixels in [0, 1] (bright ink on black) and labels."""
    from sklearn.datasets import load_digits as sk_load

    data = sk_load()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(data.target)


def split(x: torch.Tensor, y: torch.Tensor, test_fraction: float = 0.2, seed: int = 0):
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(x) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


def augment_batch(x: torch.Tensor, shift: int, colour: float, polarity: float = 0.0) -> torch.Tensor:
    """Random translation by up to `shift` px (zero fill); with colour > 0 a random
    per-channel gain and offset, so a model does not care what colour a digit is;
    with polarity > 0 that share of the digits turned dark-on-light (x -> 1 - x)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (shift,) * 4)
    dy, dx = torch.randint(0, 2 * shift + 1, (2,)).tolist()
    x = padded[..., dy:dy + h, dx:dx + w]
    if colour > 0:
        gain = torch.exp((torch.rand(n, 3, 1, 1) * 2 - 1) * colour)
        offset = (torch.rand(n, 3, 1, 1) * 2 - 1) * colour / 2
        x = (gain * x + offset + 0.05 * torch.randn_like(x)).clamp(0, 1)
    if polarity > 0:
        x = torch.where(torch.rand(n, 1, 1, 1) < polarity, 1 - x, x)
    return x


def train(model_cfg: DictConfig, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
          shift: int = 2, colour: float = 0.0, polarity: float = 0.0, lr: float = 2e-3,
          batch_size: int = 64, attack: PGD | None = None) -> models.Classifier:
    """Train the classifier of `model_cfg` from scratch (AdamW, cosine decay) through pii's Classifier,
    so training sees the same normalisation and resizing as inversion. `attack`: adversarial
    training, each augmented batch replaced by its PGD attack (pii.models.robust), epsilon warmed up."""
    torch.manual_seed(seed)
    clf = models.build(model_cfg)
    net = clf.net.train().requires_grad_(True)  # Classifier keeps itself frozen; train the network inside
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb = augment_batch(x[idx], shift, colour, polarity)
            if attack is not None:
                xb = attack.at(sched.last_epoch / steps)(clf, xb, y[idx])  # the scheduler counts the steps done
            loss = F.cross_entropy(clf(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log.info("%s epoch %d/%d: loss %.3f", model_cfg.name, epoch + 1, epochs, total / len(x))
    net.eval().requires_grad_(False)
    log.info("%s trained in %.0f s", model_cfg.name, time.perf_counter() - started)
    return clf


@torch.no_grad()
def accuracy(clf: models.Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return (clf(x).argmax(-1) == y).float().mean().item()
