"""What an inversion optimises: a list of weighted terms, summed.

A term reads the classifier's logits, one layer's activation, or the image itself, and returns a
loss per view (the loop averages an image's views) or per image. Each term is a class that a YAML
file names in `_target_` (conf/objective/); a new objective is a class here and a YAML file.
Maximising an activation is minimising its negative.

A layer's activation reaches the terms as an (views, units, positions) view whatever the layer's
layout (NCHW, NHWC, tokens): pii.models.layers finds the layout and reads the network; this module
knows only that view. A term whose `unit` is None reads each image's own target (the unit the
image is made for); a fixed `unit` reads that unit for every image ("channel 12 minus channel 40").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pii.core.losses import BatchNormStatistics
from pii.errors import ConfigError


@dataclass
class Activation:
    """A layer's output as (views, units, positions), positions laid out as `grid` (rows, cols)."""
    values: torch.Tensor
    grid: tuple[int, int]


@dataclass
class Readout:
    """What one forward pass of a chunk of views gives the terms."""
    logits: torch.Tensor | None          # (views, classes); None when the network stopped early
    layers: dict[str, Activation]
    targets: torch.Tensor                # (views,): the class or unit each view's image is made for
    images: torch.Tensor                 # (views,): which image each view is of


# A reader runs the classifier on views: (classifier, views, eager) -> (logits or None, {layer: Activation})
Reader = Callable[[nn.Module, torch.Tensor, bool], tuple[torch.Tensor | None, dict[str, Activation]]]


def read_logits(classifier: nn.Module, views: torch.Tensor, eager: bool = False):
    return classifier(views, eager=eager), {}


class Term:
    """One weighted part of the objective. `weight` multiplies its loss; 0 leaves it out."""
    layer: str | None = None       # the layer it reads, by the model's own name
    reads_layer = False            # reads `layer` (set by the subclasses that take one)
    reads_logits = False
    reads_batchnorm = False        # reads the BatchNorm layers' batch statistics (the network runs whole)
    splits = True                  # a view's loss depends on that view alone: chunks of views add up
    targeted = False               # reads each image's own target (its class or unit)

    def __init__(self, weight: float):
        self.weight = float(weight)

    def check(self, units: int, grid: tuple[int, int]) -> None:
        """Raise ConfigError where this term's settings do not fit its layer (`units` of it)."""

    def attach(self, classifier: nn.Module) -> None:
        """Get ready to read `classifier` (hooks)."""


class ViewTerm(Term):
    def loss(self, out: Readout) -> torch.Tensor:
        """(views,) losses."""
        raise NotImplementedError

    def score(self, out: Readout) -> torch.Tensor:
        """(views,): what the progress bar and the logger report of the target (probability, activation)."""
        return -self.loss(out)


class ImageTerm(Term):
    def loss(self, image: torch.Tensor) -> torch.Tensor:
        """(images,) losses."""
        raise NotImplementedError


class Class(ViewTerm):
    """Cross-entropy of each view against its image's class: PII's loss."""
    reads_logits, targeted = True, True

    def classes(self, out: Readout) -> torch.Tensor:
        return out.targets

    def loss(self, out):
        return F.cross_entropy(out.logits.float(), self.classes(out), reduction="none")

    def score(self, out):
        return out.logits.detach().float().softmax(-1).gather(1, self.classes(out)[:, None]).squeeze(1)


class Logit(Class):
    """The class's logit, raised (no softmax: other classes are not pushed down)."""

    def loss(self, out):
        return -out.logits.float().gather(1, self.classes(out)[:, None]).squeeze(1)


class Unit(ViewTerm):
    """A term on units of one layer: `unit`, or each image's target when None."""
    reads_layer = True

    def __init__(self, layer: str, unit: int | None, weight: float):
        super().__init__(weight)
        self.layer, self.unit, self.targeted = str(layer), unit, unit is None

    def check(self, units, grid):
        if self.unit is not None and not 0 <= int(self.unit) < units:
            raise ConfigError(f"objective: unit {self.unit} of layer {self.layer!r} is out of range; "
                              f"it has {units} units (0 to {units - 1})")

    def units(self, out: Readout) -> torch.Tensor:
        return out.targets if self.unit is None else torch.full_like(out.targets, int(self.unit))

    def activation(self, out: Readout) -> torch.Tensor:
        """(views,) the unit's activation."""
        raise NotImplementedError

    def loss(self, out):
        return -self.activation(out)

    def score(self, out):
        return self.activation(out).detach()


class Channel(Unit):
    """A unit's mean activation over its positions (lucid's `channel`; prefix tokens left out)."""

    def activation(self, out):
        values = out.layers[self.layer].values
        return values[torch.arange(len(values), device=values.device), self.units(out)].mean(-1)


class Neuron(Unit):
    """A unit at one position: `position` [row, col] of the layer's grid at the model's input size
    (scaled to smaller stages), the centre when None."""

    def __init__(self, layer: str, unit: int | None, position: Iterable[int] | None, weight: float):
        super().__init__(layer, unit, weight)
        self.position = None if position is None else tuple(int(p) for p in position)

    def check(self, units, grid):
        super().check(units, grid)
        if self.position is not None and (len(self.position) != 2 or not all(
                0 <= p < g for p, g in zip(self.position, grid))):
            raise ConfigError(f"objective.position {list(self.position)} is not in layer {self.layer!r}'s grid "
                              f"of {grid[0]} x {grid[1]} positions; give [row, col] within it, or null for the centre")
        self.full_grid = grid

    def activation(self, out):
        act = out.layers[self.layer]
        rows, cols = act.grid
        if self.position is None:
            row, col = rows // 2, cols // 2
        else:  # the same place of the picture at a smaller stage
            row = min(rows - 1, self.position[0] * rows // self.full_grid[0])
            col = min(cols - 1, self.position[1] * cols // self.full_grid[1])
        values = act.values[:, :, row * cols + col]
        return values[torch.arange(len(values), device=values.device), self.units(out)]


class Direction(ViewTerm):
    """A direction in the layer's unit space, per position: dot(activation, vector), or lucid's
    dot * max(cos, 0.1)^cossim_power; mean over positions. `vector`: a list, or a .npy / .pt file."""
    reads_layer = True

    def __init__(self, layer: str, vector, cossim_power: float, weight: float):
        super().__init__(weight)
        self.layer, self.cossim_power = str(layer), float(cossim_power)
        self.vector = load_vector(vector)

    def check(self, units, grid):
        if len(self.vector) != units:
            raise ConfigError(f"objective.vector has {len(self.vector)} values and layer {self.layer!r} has {units} "
                              f"units; give a vector of {units}")

    def activation(self, out):
        values = out.layers[self.layer].values
        vector = self.vector.to(values.device)
        dot = torch.einsum("vcp,c->vp", values, vector)
        if self.cossim_power:
            cos = dot / (values.norm(dim=1) * vector.norm() + 1e-8)
            dot = dot * cos.clamp(min=0.1) ** self.cossim_power
        return dot.mean(-1)

    def loss(self, out):
        return -self.activation(out)

    def score(self, out):
        return self.activation(out).detach()


def load_vector(vector) -> torch.Tensor:
    if isinstance(vector, (str, Path)):
        path = Path(vector)
        if not path.is_file():
            raise ConfigError(f"objective.vector {str(path)!r} is not a file; give a .npy or .pt file, or a list")
        try:
            vector = np.load(path) if path.suffix == ".npy" else torch.load(path, weights_only=True)
        except Exception as err:  # noqa: BLE001 - whatever the file is, the user gets one line
            raise ConfigError(f"objective.vector {str(path)!r} cannot be read as a vector ({err})") from None
    try:
        tensor = torch.as_tensor(np.asarray(vector, dtype=np.float32) if not torch.is_tensor(vector) else vector)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"objective.vector must be numbers, got {vector!r} ({err})") from None
    if tensor.dim() != 1 or not len(tensor):
        raise ConfigError(f"objective.vector must be one list of numbers, got shape {list(tensor.shape)}")
    return tensor.float()


class Layer(ViewTerm):
    """DeepDream: the mean squared activation of the whole layer."""
    reads_layer = True

    def __init__(self, layer: str, weight: float):
        super().__init__(weight)
        self.layer = str(layer)

    def loss(self, out):
        return -out.layers[self.layer].values.pow(2).mean((1, 2))


class Diversity(ViewTerm):
    """lucid's diversity: the cosine similarity of a view's Gram matrix (units x units, over the
    positions) with those of the other images of its target, averaged; minimised. Needs every view
    at once."""
    reads_layer = True
    splits = False

    def __init__(self, layer: str, weight: float):
        super().__init__(weight)
        self.layer = str(layer)

    def loss(self, out):
        values = out.layers[self.layer].values
        gram = F.normalize((values @ values.transpose(1, 2)).flatten(1), dim=1)
        others = (out.targets[:, None] == out.targets[None]) & (out.images[:, None] != out.images[None])
        return ((gram @ gram.T) * others).sum(1) / others.sum(1).clamp(min=1)


class TotalVariation(ImageTerm):
    """Mean absolute difference between neighbouring pixels."""

    def loss(self, image):
        dy = (image[..., 1:, :] - image[..., :-1, :]).abs().mean((1, 2, 3))
        dx = (image[..., :, 1:] - image[..., :, :-1]).abs().mean((1, 2, 3))
        return dy + dx


class L2(ImageTerm):
    """The image's L2 norm."""

    def loss(self, image):
        return image.flatten(1).norm(dim=1)


class Near(ImageTerm):
    """Feature accentuation (Horama): the images start from a photo (objective.photo) and this
    keeps them near it, the mean squared pixel difference to the photo at the image's size.
    (Horama measures the distance in a layer's features; pixels keep the term free of a layer.)"""

    def __init__(self, weight: float):
        super().__init__(weight)
        self.photo: torch.Tensor | None = None

    def loss(self, image):
        if self.photo is None:
            raise ConfigError("objective: the term Near keeps the images near a photo; set objective.photo=<image file>")
        photo = F.interpolate(self.photo, size=image.shape[-2:], mode="bilinear", align_corners=False) \
            if self.photo.shape[-1] != image.shape[-1] else self.photo
        return (image - photo).pow(2).mean((1, 2, 3))


class BatchNorm(ImageTerm):
    """DeepInversion's BatchNorm statistics penalty (pii.core.losses.BatchNormStatistics), of the
    whole batch: each image carries it in full, as each carried it in the mean over images."""
    reads_batchnorm, splits = True, False

    def attach(self, classifier):
        self.stats = BatchNormStatistics(classifier)

    def loss(self, image):
        return self.stats.penalty().expand(len(image))


class Objective:
    """The weighted sum of `terms` (those of weight 0 left out). `read` runs the classifier and
    gives what the terms read (pii.models.layers.Reader where a term reads a layer)."""

    def __init__(self, terms: Iterable[Term], classifier: nn.Module | None = None, read: Reader = read_logits):
        self.terms = [t for t in terms if t.weight]
        if not self.terms:
            raise ConfigError("objective: every term has weight 0; give one term a weight")
        for term in self.terms:
            if term.weight < 0 and isinstance(term, ImageTerm):
                raise ConfigError(f"objective: the prior {type(term).__name__} has weight {term.weight}; "
                                  f"a prior's weight must be >= 0")
            if classifier is not None:
                term.attach(classifier)
        self.read = read
        self.view_terms = [t for t in self.terms if isinstance(t, ViewTerm)]
        self.image_terms = [t for t in self.terms if isinstance(t, ImageTerm)]
        reported = [t for t in self.view_terms if t.targeted] or self.view_terms
        self.reported = reported[0] if reported else None

    def anchor(self, photo: torch.Tensor) -> None:
        """The photo (batch or 1, 3, H, W) that the Near terms keep the images near."""
        for term in self.terms:
            if isinstance(term, Near):
                term.photo = photo

    @property
    def layers(self) -> list[str]:
        return sorted({t.layer for t in self.terms if t.layer is not None})

    @property
    def reads_logits(self) -> bool:
        return any(t.reads_logits for t in self.terms)

    @property
    def reads_whole_network(self) -> bool:
        return any(t.reads_logits or t.reads_batchnorm for t in self.terms)

    @property
    def splits_over_views(self) -> bool:
        """Whether the loss of all views is the sum of the losses of chunks of them: not with a term
        over the whole batch (BatchNorm statistics, diversity)."""
        return all(t.splits for t in self.terms)

    def views_loss(self, classifier: nn.Module, views: torch.Tensor, targets: torch.Tensor, images: torch.Tensor,
                   total: int | None = None, eager: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """This chunk's share of the mean over all `total` views of the view terms, and each view's
        reported score (the target's probability or activation; zeros without a view term)."""
        total = total or len(views)
        logits, layers = self.read(classifier, views, eager)
        out = Readout(logits, layers, targets, images)
        loss = views.new_zeros(())
        for term in self.view_terms:
            loss = loss + term.weight * term.loss(out).sum() / total
        scores = self.reported.score(out) if self.reported else torch.zeros(len(views), device=views.device)
        return loss, scores.detach().float()

    def image_loss(self, image: torch.Tensor) -> torch.Tensor:
        """The mean over images of the image terms (and the BatchNorm penalty of the last forward pass)."""
        loss = image.new_zeros(())
        for term in self.image_terms:
            loss = loss + term.weight * term.loss(image).mean()
        return loss
