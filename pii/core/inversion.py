"""Plug-In Inversion, paper Section 3.4: jitter, ensembling, ColorShift,
centering and zoom around plain cross-entropy, with one set of settings for
every model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pii.core import schedule
from pii.core.augment import Augmentation
from pii.core.draws import Draws
from pii.core.objectives import Objective
from pii.core.observers import Observer
from pii.core.param import Param
from pii.core.schedule import Stage
from pii.errors import ConfigError


def invert(classifier: nn.Module, class_ids: list[int], augment: Augmentation, stages: list[Stage],
           loss_fn: Objective, make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
           observer: Observer | None = None,
           image: torch.Tensor | None = None, first_stage: int = 0, *, log_every: int,
           chunk: int | Callable[[int, int], int] | None, param: Param, seed: int) -> torch.Tensor:
    """Optimise one image per target so that `loss_fn` (an Objective of weighted terms) falls: by
    default each image's class (`class_ids`); with unit terms, `class_ids` are the units the images
    are made for.

    The image is `param`, a parametrization (pii.core.param: pixels, ...). For each
    stage: grow it (the previous image pasted in the centre of a fresh canvas),
    make a fresh optimiser (`make_optimizer(parameters)`) and cosine schedule, then step: render, augment,
    forward, loss, backward, step, project (pixels: clamp to [0, 1]). `image`
    replaces what the run starts from: the image at the end of stage
    `first_stage` - 1 (to resume), or another run's images (first_stage 0: PII,
    then DeepInversion); a `param` that already holds an image starts from it.

    The loop never waits for the device except every `log_every` steps and at
    each stage's last step, when the observer gets that step's loss and
    probabilities. `chunk` views go through the classifier at once: a number, or
    a function of (views, stage size) called at each stage's first step (the
    runner hands in pii.models.device.views_per_chunk); None: all of them. The
    gradient is the same as all at once.

    Every random number of image i (its fresh canvas at each stage, its augmentations) comes from
    its own stream, seeded from (`seed`, class_ids[i], stage index) at each stage's start
    (pii.core.draws): a class's image does not depend on the other classes of the batch, up to the
    rounding of batched kernels, and a run resumed at a stage draws what the whole run drew.
    """
    observer = observer or Observer()
    device = next(classifier.buffers()).device
    targets = torch.tensor(class_ids, device=device)
    if image is not None:
        param.encode(image.to(device))
    for index in range(first_stage, len(stages)):
        stage = stages[index]
        draws = Draws.seeded(seed, class_ids, index)
        param.grow(stage, draws)
        optimizer, lr_schedule = schedule.optimizer(param.parameters(), stage.steps, make_optimizer)
        observer.stage_started(index, stage, param.image())
        per_chunk = None
        first_nonfinite = torch.full((), -1, device=device)  # the first step whose loss was nan or inf, on the device
        for step in range(stage.steps):
            image = param.render()
            views = augment(image, draws)
            view_targets = targets.repeat_interleave(views.shape[0] // len(class_ids))
            per_chunk = per_chunk or chunk_size(chunk, len(views), stage.size)
            optimizer.zero_grad(set_to_none=True)
            loss, probs = forward_backward(classifier, loss_fn, views, view_targets, image, per_chunk)
            first_nonfinite = torch.where((first_nonfinite < 0) & ~loss.isfinite(), step, first_nonfinite)
            optimizer.step()
            lr_schedule.step()
            param.project()
            if step % log_every == 0 or step == stage.steps - 1:
                value = loss.item()
                if (bad := int(first_nonfinite.item())) >= 0:  # before the stage's image is saved
                    raise ConfigError(f"the loss became nan or inf at stage {index + 1} of {len(stages)} ({stage.size} px), "
                                      f"step {bad + 1} ({value} at step {step + 1}): the optimisation diverged; lower "
                                      f"schedule.lr (now {optimizer.param_groups[0]['initial_lr']:g}) or the loss weights")
                observer.step_done(index, step, value, probs.view(len(class_ids), -1).mean(1).cpu())
        image = param.image()
        if not image.isfinite().all():  # the last step's update, which no loss has seen
            raise ConfigError(f"the image became nan or inf at stage {index + 1} of {len(stages)} ({stage.size} px), "
                              f"step {stage.steps}: the optimisation diverged; lower schedule.lr (now {optimizer.param_groups[0]['initial_lr']:g})")
        observer.stage_done(index, stage, image)
    return param.image()


def chunk_size(chunk: int | Callable[[int, int], int] | None, views: int, size: int) -> int:
    if callable(chunk):
        return chunk(views, size)
    return views if chunk is None else min(int(chunk), views)


def forward_backward(classifier: nn.Module, loss_fn: Objective, views: torch.Tensor, targets: torch.Tensor,
                     image: torch.Tensor, per_chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The loss of all views, backpropagated into `image` `per_chunk` views at a time (gradients
    accumulate, so peak memory is one chunk's). Returns the loss and each view's target
    score (pii.core.objectives.Objective.views_loss), both detached and left on the device.

    The loss is the mean over the batch; what is backpropagated is that times the batch size, the
    sum of each image's own loss (the mean over its views, its priors), so that an image's
    gradient does not shrink with the number of images beside it: Adam's step would (through its
    eps), and a class's image would depend on its batch."""
    if per_chunk < len(views) and not loss_fn.splits_over_views:
        raise ConfigError("loss=deepinversion and the objective's diversity need all views in one batch (BatchNorm "
                          "statistics and Gram matrices are compared over the batch); set augmentation.chunk to at "
                          "least the number of views, or use fewer views")
    split = per_chunk < len(views)
    # Split, each chunk's graph starts at its own copy of the views, and the augmentation's graph
    # (views from image), which all chunks share, runs back once with all their gradients: run back
    # from every chunk, it cost a whole batch's augmentation backward per chunk (+30% per step at
    # 2 chunks on a 2-core CPU).
    chunks = [c.detach().requires_grad_() for c in views.split(per_chunk)] if split else [views]
    images = torch.arange(len(image), device=targets.device).repeat_interleave(len(views) // len(image))
    losses, scores = [], []
    for index, (chunk, chunk_targets, chunk_images) in enumerate(zip(chunks, targets.split(per_chunk),
                                                                     images.split(per_chunk))):
        loss, score = loss_fn.views_loss(classifier, chunk, chunk_targets, chunk_images, total=len(views))
        if index == 0:
            loss = loss + loss_fn.image_loss(image)
        # the first chunk's priors run back through the image's graph, which the views' pass needs again
        (loss * len(image)).backward(retain_graph=split and index == 0)
        losses.append(loss.detach())
        scores.append(score)
    if split:
        views.backward(torch.cat([c.grad for c in chunks]))
    return torch.stack(losses).sum(), torch.cat(scores)
