"""Zoom and centering: the stage sizes, how an image grows between stages,
and the optimiser that is made afresh at every stage (paper Sections 3.1, 4)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Stage:
    """One stage: optimise a `size` px canvas for `steps` steps.

    The previous stage's image is resized to `paste` px (None: kept as it is)
    and pasted in the centre of a fresh uniform-noise canvas.
    """

    size: int
    steps: int
    paste: int | None


def plan(full_size: int, *, stages: int, steps: int, zoom: bool, centering: bool) -> list[Stage]:
    """The stages for an image of `full_size` px.

    With n stages, step = full_size / (n + 1) and the sizes are 2*step, ...,
    full_size (224 and 7 stages: 56, 84, ..., 224). With zoom the previous
    image is upsampled; with centering a border of step/2 in all is new noise,
    so with both the pasted patch is halfway between the old and new sizes.
    Neither: one stage at full size with the same total number of steps.
    """
    stages, steps = int(stages), int(steps)  # ranges: pii.run.config.check_invert
    if not (zoom or centering):
        return [Stage(full_size, stages * steps, None)]
    step = full_size / (stages + 1)
    sizes = [round(k * step) for k in range(2, stages + 2)]
    border = round(step / 2) if centering else 0
    plan_ = []
    for index, size in enumerate(sizes):
        if index == 0:
            paste = None
        elif zoom:
            paste = size - border
        else:  # centering only: the old image keeps its scale, the canvas grows around it
            paste = sizes[index - 1]
        plan_.append(Stage(size, steps, paste))
    return plan_


def grow(previous: torch.Tensor | None, stage: Stage, canvas: torch.Tensor) -> torch.Tensor:
    """`canvas` (a fresh image of the stage's size: U[0, 1) noise for pixels, see pii.core.param) with
    `previous` pasted in its centre."""
    if previous is None:
        return canvas
    patch = previous.detach()
    if stage.paste is not None and stage.paste != patch.shape[-1]:
        patch = F.interpolate(patch, size=(stage.paste, stage.paste), mode="bilinear", align_corners=False)
    if patch.shape[-1] > stage.size:
        patch = F.interpolate(patch, size=(stage.size, stage.size), mode="bilinear", align_corners=False)
    top = (stage.size - patch.shape[-1]) // 2
    canvas[..., top : top + patch.shape[-2], top : top + patch.shape[-1]] = patch.clamp(0, 1)
    return canvas


def optimizer(params: list[torch.Tensor], steps: int, make: Callable[[list[torch.Tensor]], torch.optim.Optimizer]):
    """`make(params)` (the `optimizer` config group's class with its settings: Adam, or MACO's NAdam)
    with cosine decay to 0 over the stage's `steps`; re-created at every stage."""
    opt = make(params)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.0)
