"""sklearn's 8x8 digits, which ship offline, upscaled to 32 px and 3 channels, their fixed 80/20
split, and a model config's classifier trained on them (pii.models.training)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pii import models
from pii.models.robust import PGD
from pii.models.training import fit, split

SIZE = 32


def load_digits(size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 digits as [N, 3, size, size] pixels in [0, 1] (bright ink on black) and labels."""
    from sklearn.datasets import load_digits as sk_load

    data = sk_load()
    x = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.expand(-1, 3, -1, -1).contiguous(), torch.tensor(data.target)


TEST_FRACTION = 0.2


def digits_split():
    """((x_train, y_train), (x_test, y_test)): the 32 px digits split 80/20 (pii.models.training.split, seed 0)."""
    x, y = load_digits()
    train_idx, test_idx = split(len(x), TEST_FRACTION, seed=0)
    return (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx])


def train(model_cfg: DictConfig, x: torch.Tensor, y: torch.Tensor, epochs: int, seed: int,
          shift: int = 2, colour: float = 0.0, polarity: float = 0.0, lr: float = 2e-3,
          batch_size: int = 64, attack: PGD | None = None) -> models.Classifier:
    """The classifier of `model_cfg` built with seed `seed` and trained from scratch (pii.models.training.fit);
    `attack`: adversarially, each augmented batch replaced by its PGD attack (pii.models.robust)."""
    torch.manual_seed(seed)
    return fit(models.build(model_cfg, "cpu", **models.PLAIN), x, y, epochs, shift=shift, colour=colour,
               polarity=polarity, lr=lr, batch_size=batch_size, attack=attack)
