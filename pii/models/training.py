"""Training a small classifier from scratch, and the fixed train/held-out split it is trained on:
the digits models (pii.models.digits) and train_invert's small CNN (pii.feedforward.classifier)
train here, through pii's Classifier, so training sees the normalisation and resizing that
inversion sees."""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from pii.errors import ConfigError
from pii.models.classifier import Classifier
from pii.models.robust import PGD

log = logging.getLogger(__name__)


def split(n: int, test_fraction: float, seed: int, key: str = "test_fraction") -> tuple[list[int], list[int]]:
    """A fixed random train/held-out split of n items, the same for every run with this seed: the
    (train, test) indices, each in the order of the seeded permutation. The held-out count is
    n * test_fraction rounded to the nearest item; ConfigError (naming the config `key`) if that
    leaves either side empty."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test = int(round(n * test_fraction))
    if not 0 < n_test < n:
        raise ConfigError(f"{key}={test_fraction} leaves no train or no test images out of {n}")
    return perm[n_test:], perm[:n_test]


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


def fit(clf: Classifier, x: torch.Tensor, y: torch.Tensor, epochs: int, *, lr: float, batch_size: int,
        shift: int = 2, colour: float = 0.0, polarity: float = 0.0, weight_decay: float = 0.05,
        attack: PGD | None = None) -> Classifier:
    """Train the network inside `clf` on pixels `x` in [0, 1] and labels `y`: AdamW with one-cycle
    decay, every image once per epoch in shuffled batches, each batch augmented (`augment_batch`).
    Draws from torch's global random state: seed it before building the model (or fork it, as
    the small CNN does, to leave the caller's draws alone). The network ends frozen again. `attack`:
    adversarial training, each augmented batch replaced by its PGD attack (pii.models.robust)."""
    net = clf.net.train().requires_grad_(True)  # Classifier keeps itself frozen; train the network inside
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    started = time.perf_counter()
    for epoch in range(epochs):
        order = torch.randperm(len(x))
        total = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start:start + batch_size]
            xb = augment_batch(x[idx], shift, colour, polarity)
            if attack is not None:  # its epsilon warms up over the first part of training (PGD.at)
                xb = attack.at(sched.last_epoch / steps)(clf, xb, y[idx])  # the scheduler counts the steps done
            loss = F.cross_entropy(clf(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log.info("%s epoch %d/%d: loss %.3f", clf.name, epoch + 1, epochs, total / len(x))
    net.eval().requires_grad_(False)
    log.info("%s trained in %.0f s", clf.name, time.perf_counter() - started)
    return clf


@torch.no_grad()
def accuracy(clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return (clf(x).argmax(-1) == y).float().mean().item()
