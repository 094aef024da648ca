"""What an inversion reports while it runs. The loop calls these hooks and
knows nothing of files, W&B or progress bars."""

from __future__ import annotations

import torch

from pii.core.schedule import Stage


class Observer:
    """No-op hooks; subclasses override what they need."""

    def stage_started(self, index: int, stage: Stage, image: torch.Tensor) -> None: ...

    def step_done(self, index: int, step: int, loss: float, probs: torch.Tensor) -> None:
        """Every `log_every` steps and at a stage's last step (pii.core.inversion.invert): that step's
        loss, and per class the target probability averaged over the augmented views."""

    def stage_done(self, index: int, stage: Stage, image: torch.Tensor) -> None: ...

    def run_done(self, image: torch.Tensor, result: object) -> None:
        """The final images and the run's result (the runner's pii.eval.results.RunResult, what
        metrics.json holds)."""


class Observers(Observer):
    """Fans each event out to several observers, in order."""

    def __init__(self, observers: list[Observer]):
        self.observers = list(observers)

    def stage_started(self, *args) -> None:
        for o in self.observers:
            o.stage_started(*args)

    def step_done(self, *args) -> None:
        for o in self.observers:
            o.step_done(*args)

    def stage_done(self, *args) -> None:
        for o in self.observers:
            o.stage_done(*args)

    def run_done(self, *args) -> None:
        for o in self.observers:
            o.run_done(*args)
