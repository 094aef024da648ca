"""Adversarial robustness of the classifiers trained here: the PGD attack and the accuracy under it.

PGD (projected gradient descent; Madry et al., Towards Deep Learning Models Resistant to
Adversarial Attacks, ICLR 2018): from a random point of the epsilon-ball around an image, steps up
the cross-entropy's gradient (its sign for L-inf, its direction for L2), each time projected back
onto the ball and into [0, 1] pixels. Adversarial training replaces every training batch by its
PGD attack (the `robust` config group: conf/robust/), its epsilon rising from 0 over the first
`warmup` share of the steps; robust accuracy is the accuracy on a stronger attack (more, smaller
steps) at the training epsilon.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("linf", "l2")
EVAL_STEP = 2.5  # the evaluation attack's step: 2.5 x epsilon / steps, so any start can reach the ball's far side


@dataclass(frozen=True)
class PGD:
    norm: str  # linf | l2
    epsilon: float  # the ball's radius, in [0, 1] pixels
    steps: int
    step_size: float
    warmup: float = 0.0  # training: the share of the steps over which epsilon and step_size rise from 0

    @classmethod
    def training(cls, robust) -> PGD | None:
        """The training attack of a `robust` config; None for natural training (robust=none)."""
        if robust is None or robust.norm is None:
            return None
        return cls(str(robust.norm), float(robust.epsilon), int(robust.steps), float(robust.step_size),
                   float(robust.warmup))

    def at(self, progress: float) -> PGD:
        """The attack at `progress` (0 to 1) through training: epsilon and step size scaled by the warmup.
        Adversarial training from the first step at full epsilon left the digits ViT at chance
        (docs/robust.md); ramping epsilon up is the usual remedy for transformers."""
        scale = min(1.0, progress / self.warmup) if self.warmup > 0 else 1.0
        return replace(self, epsilon=self.epsilon * scale, step_size=self.step_size * scale)

    @classmethod
    def evaluation(cls, robust) -> PGD | None:
        """The stronger attack that robust accuracy is measured with: `eval_steps` steps at the same epsilon."""
        if robust is None or robust.norm is None:
            return None
        steps = int(robust.eval_steps)
        return cls(str(robust.norm), float(robust.epsilon), steps, EVAL_STEP * float(robust.epsilon) / steps)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x's adversarial version against `model` (which takes [0, 1] pixels): within epsilon of x, in [0, 1].
        The model's parameters get no gradient; its train/eval mode is the caller's."""
        delta = self._project(self._start(x))
        delta = (x + delta).clamp(0, 1) - x
        for _ in range(self.steps):
            delta.requires_grad_(True)
            loss = F.cross_entropy(model(x + delta), y)
            (grad,) = torch.autograd.grad(loss, delta)
            delta = self._project(delta.detach() + self.step_size * self._ascent(grad))
            delta = (x + delta).clamp(0, 1) - x
        return (x + delta).detach()

    def _start(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return (torch.rand_like(x) * 2 - 1) * self.epsilon
        noise = torch.randn_like(x)
        return self.epsilon * noise / per_image_norm(noise)

    def _ascent(self, grad: torch.Tensor) -> torch.Tensor:
        """The steepest ascent direction of unit norm."""
        return grad.sign() if self.norm == "linf" else grad / per_image_norm(grad)

    def _project(self, delta: torch.Tensor) -> torch.Tensor:
        if self.norm == "linf":
            return delta.clamp(-self.epsilon, self.epsilon)
        return delta * (self.epsilon / per_image_norm(delta)).clamp(max=1)


def per_image_norm(t: torch.Tensor) -> torch.Tensor:
    """L2 norm of each image of a batch, shaped to broadcast against it (never 0)."""
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (t.dim() - 1))


def distance(x: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image distance in the attack's norm."""
    d = (x_adv - x).flatten(1)
    return d.abs().amax(1) if norm == "linf" else d.norm(dim=1)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: PGD, batch_size: int = 256,
                    seed: int = 0) -> float:
    """Accuracy on `attack`'s version of each image (its random starts seeded: the same figure on a rerun)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        correct = 0
        for xb, yb in zip(x.split(batch_size), y.split(batch_size)):
            x_adv = attack(model, xb, yb)
            with torch.no_grad():
                correct += (model(x_adv).argmax(-1) == yb).sum().item()
    return correct / len(x)
