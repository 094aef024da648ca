"""Losses of feedforward inversion: the hinge GAN loss, and optional
reconstruction terms (each off with weight 0):

  pixel_l1           |G(f(x), z) - x|, mean over pixels
  feature_matching   |phi(G(f(x), z)) - phi(x)|, phi = the classifier's penultimate features
  logit_consistency  |f(G(f(x), z)) - f(x)|, in logits
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from pii.errors import ConfigError
from pii.feedforward.classifier import penultimate

TERMS = ("pixel_l1", "feature_matching", "logit_consistency")


def hinge_d(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: E[relu(1 - D(x))] + E[relu(1 + D(G(c, z)))]."""
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()


def hinge_g(fake: torch.Tensor) -> torch.Tensor:
    """Generator hinge loss: -E[D(G(c, z))]."""
    return -fake.mean()


class GeneratorLoss(nn.Module):
    """The weighted reconstruction terms; returns each weighted term by name (empty when all weights are 0).
    `adversarial` is the weight of the hinge term that the training loop adds to G's loss."""

    def __init__(self, classifier: nn.Module, *, pixel_l1: float, feature_matching: float, logit_consistency: float,
                 adversarial: float):
        super().__init__()
        self.classifier, self.adversarial = classifier, adversarial
        self.weights = {"pixel_l1": pixel_l1, "feature_matching": feature_matching,
                        "logit_consistency": logit_consistency}
        for name, w in {**self.weights, "adversarial": adversarial}.items():
            if w < 0:
                raise ConfigError(f"loss.{name} must be >= 0, got {w}")

    def forward(self, fake: torch.Tensor, real: torch.Tensor, real_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        w, terms = self.weights, {}
        if w["pixel_l1"]:
            terms["pixel_l1"] = w["pixel_l1"] * (fake - real).abs().mean()
        if w["feature_matching"]:
            with torch.no_grad():
                target = penultimate(self.classifier, real)
            terms["feature_matching"] = w["feature_matching"] * (penultimate(self.classifier, fake) - target).abs().mean()
        if w["logit_consistency"]:
            terms["logit_consistency"] = w["logit_consistency"] * (self.classifier(fake) - real_logits).abs().mean()
        return terms


def build(cfg: DictConfig, classifier: nn.Module) -> GeneratorLoss:
    unknown = set(cfg) - set(TERMS) - {"adversarial"}
    if unknown:
        raise ConfigError(f"unknown loss keys {sorted(unknown)}; known: adversarial, {', '.join(TERMS)}")
    return GeneratorLoss(classifier, **{k: float(cfg[k]) for k in TERMS}, adversarial=float(cfg.adversarial))
