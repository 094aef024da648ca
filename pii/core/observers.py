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


class ProgressBar(Observer):
    """A tqdm bar per stage with the loss and the mean target probability (as often as the loop reports)."""

    def __init__(self, num_stages: int):
        from tqdm.auto import tqdm

        self.tqdm, self.num_stages, self.bar = tqdm, num_stages, None

    def stage_started(self, index, stage, image):
        self.bar = self.tqdm(total=stage.steps, desc=f"stage {index + 1}/{self.num_stages} {stage.size}px",
                             leave=True, dynamic_ncols=True)

    def step_done(self, index, step, loss, probs):
        self.bar.set_postfix(loss=f"{loss:.3f}", p_target=f"{probs.mean().item():.3f}", refresh=False)
        self.bar.update(step + 1 - self.bar.n)

    def stage_done(self, index, stage, image):
        self.bar.update(stage.steps - self.bar.n)
        self.bar.close()
