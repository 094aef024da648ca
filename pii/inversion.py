"""Plug-In Inversion, paper Section 3.4: jitter, ensembling, ColorShift,
centering and zoom around plain cross-entropy, with one set of settings for
every model."""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from torch import nn

from pii import schedule
from pii.losses import Loss
from pii.observers import Observer
from pii.schedule import Stage


def invert(classifier: nn.Module, class_ids: list[int], augment: nn.Module, stages: list[Stage],
           loss_fn: Loss, optim_cfg: DictConfig, observer: Observer | None = None,
           image: torch.Tensor | None = None, first_stage: int = 0) -> torch.Tensor:
    """Optimise one image per class so that `classifier` puts it in that class.

    For each stage: grow the image (fresh noise canvas, previous image pasted
    in the centre), make a fresh Adam and cosine schedule, then step: augment,
    forward, loss, backward, step, clamp to [0, 1]. `image` replaces the noise
    the run starts from: the image at the end of stage `first_stage` - 1 (to
    resume), or another run's images (first_stage 0: PII, then DeepInversion).
    """
    observer = observer or Observer()
    device = next(classifier.buffers()).device
    targets = torch.tensor(class_ids, device=device)
    for index in range(first_stage, len(stages)):
        stage = stages[index]
        image = schedule.grow(image, stage, len(class_ids), device).requires_grad_(True)
        optimizer, lr_schedule = schedule.optimizer([image], stage.steps, optim_cfg)
        observer.stage_started(index, stage, image.detach())
        for step in range(stage.steps):
            views = augment(image)
            copies = views.shape[0] // len(class_ids)
            view_targets = targets.repeat_interleave(copies)
            logits = classifier(views)
            loss = loss_fn(logits, view_targets, image)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr_schedule.step()
            with torch.no_grad():
                image.clamp_(0, 1)
                probs = logits.detach().softmax(-1).gather(1, view_targets[:, None])
                observer.step_done(index, step, loss.item(), probs.view(len(class_ids), copies).mean(1).cpu())
        image = image.detach()
        observer.stage_done(index, stage, image)
    return image
