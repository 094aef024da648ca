"""Measures of images made for units (a channel, a neuron) rather than classes: no judge says what
a unit is, so the checks are the usual ones (docs/objectives.md):

- activation: the objective's target term on the image as it is (no augmentation), at the start
  (noise) and at the end;
- specificity: the image's unit is the most activated of its layer once each unit is z-scored over
  a reference batch (the run's images and noise images); the share of such images is the run's;
- diversity (pii.eval.judge.diversity): where a target has several images, their mean pairwise
  distance in a classifier's feature space (the input of its head).
"""

from __future__ import annotations

import torch
from torch import nn

from pii.core.objectives import Objective
from pii.eval.judge import spectral_slope
from pii.eval import results
from pii.eval.results import UnitResult


def image_names(layer: str, units: list[int]) -> list[str]:
    """`<layer>_<unit>.png`; several images of one unit: `<layer>_<unit>_<k>.png`, k = 0, 1, ..."""
    return results.image_names([f"{layer}_{unit}" for unit in units])


@torch.no_grad()
def activations(objective: Objective, classifier: nn.Module, images: torch.Tensor, units: list[int]) -> list[float]:
    """The objective's target term (pii.core.objectives.Objective.reported) on each image as it is."""
    targets = torch.tensor(units, device=images.device)
    _, scores = objective.views_loss(classifier, images, targets, torch.arange(len(images), device=images.device),
                                     eager=True)
    return scores.tolist()


NOISE = 8  # noise images in the reference of specificity


@torch.no_grad()
def unit_means(objective: Objective, classifier: nn.Module, images: torch.Tensor, layer: str) -> torch.Tensor:
    """(images, units): each unit's mean activation over the layer's positions."""
    _, layers = objective.read(classifier, images, True)
    return layers[layer].values.mean(-1)


def specific(means: torch.Tensor, reference: torch.Tensor, units: list[int]) -> list[bool]:
    """Per image: is its unit the most activated of the layer after z-scoring each unit over the
    images' `means` (unit_means) and those of the `reference` images?"""
    pool = torch.cat([means, reference])
    z = (means - pool.mean(0)) / (pool.std(0) + 1e-8)
    return (z.argmax(1).cpu() == torch.tensor(units)).tolist()


def versus_real(means: torch.Tensor, real: torch.Tensor, units: list[int]) -> list[float]:
    """Per image: its unit's mean activation (`means`, unit_means) as a multiple of the unit's largest
    on the real images (`real`, their unit_means)."""
    picked = torch.tensor(units, device=means.device)
    return (means.gather(1, picked[:, None])[:, 0] / real.amax(0)[picked]).tolist()


def unit_report(objective: Objective, classifier: nn.Module, image: torch.Tensor, units: list[int],
                start: list[float], seed: int = 0, real: torch.Tensor | None = None) -> list[UnitResult]:
    """The per-image entries of a unit run's metrics.json; `real`: real images of the model's data
    (objective.real_images), in the reference of specificity and the measure of `versus_real`."""
    layer = objective.reported.layer
    end = activations(objective, classifier, image, units)
    tops = ratios = [None] * len(units)
    if objective.reported.targeted:  # a direction's or a whole layer's images have no unit to be specific to
        means = unit_means(objective, classifier, image, layer)
        # the reference of specificity: NOISE uniform noise images, and the real images where there are some
        noise = torch.rand(NOISE, *image.shape[1:], generator=torch.Generator().manual_seed(seed)).to(image.device)
        reference = [unit_means(objective, classifier, noise, layer)]
        if real is not None:
            reference.append(unit_means(objective, classifier, real.to(image.device), layer))
            ratios = versus_real(means, reference[-1], units)
        tops = specific(means, torch.cat(reference), units)
    return [UnitResult(layer, unit, a, a0, top, ratio, name, spectral_slope(img))
            for unit, a, a0, top, ratio, name, img in zip(units, end, start, tops, ratios, image_names(layer, units),
                                                          image)]
