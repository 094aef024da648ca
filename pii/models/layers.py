"""A classifier's layers by the network's own names (`named_modules()`), their layout found once
by a probe forward pass, and a reader that hands the objective's terms an (views, units,
positions) view of each (pii.core.objectives.Activation).

Layouts: `nchw` (convolutions; channels_last memory is still NCHW to index), `nhwc` (a 4-d output
whose last dimension is the layer's channel count, e.g. Swin's stages), `tokens` (B, N, C: ViT,
DeiT, Mixer; the network's `num_prefix_tokens` class / distillation tokens left out, the rest a
grid row by row), `flat` (B, C: one position).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

import torch
from torch import nn

from pii.core.objectives import Activation, Objective
from pii.errors import ConfigError, few

LAYOUTS = ("nchw", "nhwc", "tokens", "flat")


@dataclass
class Layer:
    name: str
    module: nn.Module
    layout: str
    units: int
    grid: tuple[int, int]      # positions at the model's input size
    prefix: int = 0            # leading tokens that are no position (tokens layout)
    shape: tuple[int, ...] = ()  # the probe's output shape, batch left out

    def view(self, output) -> Activation:
        x = first_tensor(output).float()
        if self.layout == "nchw":
            return Activation(x.flatten(2), (x.shape[2], x.shape[3]))
        if self.layout == "nhwc":
            return Activation(x.flatten(1, 2).transpose(1, 2), (x.shape[1], x.shape[2]))
        if self.layout == "tokens":
            x = x[:, self.prefix:]
            return Activation(x.transpose(1, 2), token_grid(x.shape[1]))
        return Activation(x[:, :, None], (1, 1))

    def describe(self) -> str:
        prefix = f", {self.prefix} prefix tokens" if self.prefix else ""
        return f"{self.name}  {list(self.shape)}  {self.layout}: {self.units} units, grid {self.grid[0]}x{self.grid[1]}{prefix}"


def first_tensor(output):
    while isinstance(output, (tuple, list)):
        output = output[0]
    return output


def token_grid(tokens: int) -> tuple[int, int]:
    side = math.isqrt(tokens)
    return (side, tokens // side) if side * side == tokens else (1, tokens)


def channel_count(module: nn.Module) -> int | None:
    """The channel count the module's last registered layer with one declares."""
    for m in reversed(list(module.modules())):
        for attr in ("out_channels", "num_features", "out_features", "normalized_shape"):
            value = getattr(m, attr, None)
            if isinstance(value, (tuple, list)) and value:
                value = value[-1]
            if isinstance(value, int):
                return value
    return None


def layout_of(shape: torch.Size, module: nn.Module) -> str:
    if len(shape) == 4:
        known = channel_count(module)
        return "nhwc" if known is not None and shape[-1] == known and shape[1] != known else "nchw"
    if len(shape) == 3:
        return "tokens"
    if len(shape) == 2:
        return "flat"
    raise ValueError(f"an output of shape {list(shape)} has no layout here")


def network(classifier: nn.Module) -> nn.Module:
    net = classifier.net
    return getattr(net, "_orig_mod", net)


def probe(classifier: nn.Module, names: list[str] | None = None) -> tuple[dict[str, Layer], list[str]]:
    """The layers named `names` (all named layers with a tensor output when None) and the order in
    which they first finish on a probe image at the model's input size."""
    net = network(classifier)
    modules = dict(net.named_modules())
    modules.pop("", None)
    if names is not None:
        check_names(classifier, names, modules)
        modules = {n: modules[n] for n in names}
    outputs, order = {}, []

    def hook(name):
        def record(module, args, output):
            if name not in outputs and isinstance(first_tensor(output), torch.Tensor):
                outputs[name] = first_tensor(output).shape
                order.append(name)
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
    size = int(classifier.input_size)
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(classifier.mean.device)
    try:
        with torch.no_grad():
            classifier(image, eager=True)
    finally:
        for handle in handles:
            handle.remove()
    prefix = int(getattr(net, "num_prefix_tokens", 0) or 0)
    layers = {}
    for name in order:
        shape, module = outputs[name], modules[name]
        try:
            layout = layout_of(shape, module)
        except ValueError:
            if names is not None:
                raise ConfigError(f"objective: layer {name!r} gives an output of shape {list(shape)}; pick one with "
                                  f"(B, C, H, W), (B, H, W, C), (B, tokens, C) or (B, C) outputs") from None
            continue
        layer = Layer(name, module, layout, 0, (1, 1), prefix if layout == "tokens" else 0, tuple(shape[1:]))
        act = layer.view(torch.zeros(shape))
        layer.units, layer.grid = act.values.shape[1], act.grid
        layers[name] = layer
    if names is not None and (silent := [n for n in names if n not in layers]):
        raise ConfigError(f"objective: layer {silent[0]!r} does not run on an image (no output in a forward pass); "
                          f"list the layers that do: scripts/layers.py model=...")
    return layers, order


def check_names(classifier: nn.Module, names: list[str], modules: dict[str, nn.Module]) -> None:
    for name in names:
        if name not in modules:
            close = difflib.get_close_matches(str(name), list(modules), n=3)
            hint = f"did you mean {few(close)}? " if close else ""
            raise ConfigError(f"objective.layer {name!r} is not a layer of {getattr(classifier, 'name', 'the model')}; "
                              f"{hint}list them: python scripts/layers.py model=...")


class Reader:
    """Runs the classifier and keeps the outputs of `layers`, viewed for the terms. Without
    `logits`, the forward pass stops once the last of them (in the order they finish) has run:
    a hook raises, so neither the rest of the network nor its backward runs."""

    class _Stop(Exception):
        pass

    def __init__(self, classifier: nn.Module, layers: dict[str, Layer], order: list[str], logits: bool):
        self.layers, self.acts, self.active = layers, {}, False
        self.stop = None if logits else max(layers, key=order.index)
        self.handles = [layer.module.register_forward_hook(self._hook(layer)) for layer in layers.values()]

    def _hook(self, layer: Layer):
        def hook(module, args, output):
            if not self.active:  # the classifier used for anything else (reports, judges) runs as ever
                return
            self.acts[layer.name] = layer.view(output)
            if layer.name == self.stop:
                raise Reader._Stop
        return hook

    def __call__(self, classifier: nn.Module, views: torch.Tensor, eager: bool = False):
        self.acts, self.active = {}, True
        try:
            logits = classifier(views, eager=eager)
        except Reader._Stop:
            logits = None
        finally:
            self.active = False
        acts, self.acts = self.acts, {}
        return logits, acts

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def objective(terms: list, classifier: nn.Module, units: list[int] | None = None) -> Objective:
    """The Objective of `terms` on `classifier`: the layers they read resolved by name and probed
    once, each term checked against its layer, the `units` the images are made for (None: classes)
    checked against every layer a targeted term reads; the network stops after the last layer read
    when no term needs the logits or the whole network."""
    terms = [t for t in terms if t.weight]
    names = sorted({t.layer for t in terms if t.layer is not None})
    if not names:
        return Objective(terms, classifier)
    found, order = probe(classifier, names)
    for term in terms:
        if term.layer is None:
            continue
        if term.targeted and units is None:
            raise ConfigError(f"objective: the term {type(term).__name__} on layer {term.layer!r} reads each image's "
                              f"own unit; set objective.units, e.g. 'objective.units=[0,5,9]' or objective.units=first:8")
        layer = found[term.layer]
        term.check(layer.units, layer.grid)
        if term.targeted and units is not None and (bad := [u for u in units if u >= layer.units]):
            raise ConfigError(f"objective.units: unit {bad[0]} is out of range for layer {layer.name!r}, which has "
                              f"{layer.units} units (0 to {layer.units - 1})")
    whole = any(t.reads_logits or t.reads_batchnorm for t in terms)
    return Objective(terms, classifier, read=Reader(classifier, found, order, logits=whole))


def term_classes(objective_cfg) -> list[type]:
    """The classes of the objective config's terms of weight other than 0 (the config unresolved
    otherwise: settle the model before the terms are built). A `_target_` that does not load is
    left to the builder (pii.run.build.loss), which says so."""
    from hydra.utils import get_class

    found = []
    for node in (objective_cfg.get("terms") or {}).values():
        try:
            if node is not None and float(node.get("weight", 1.0)) and node.get("_target_"):
                found.append(get_class(str(node._target_)))
        except Exception:  # noqa: BLE001,S112 - a bad term fails, with its own line, where it is built
            continue
    return found


@dataclass(frozen=True)
class Needs:
    """What an objective's terms need of the classifier, known before it is built."""
    batchnorm: bool  # a term reads the BatchNorm layers (DeepInversion's penalty): they stay unfolded
    splits: bool  # every term splits over views: the views may go through the model in chunks
    layers: bool  # a term reads a layer (forward hooks, which torch.compile is not asked to trace)


def needs(objective_cfg) -> Needs:
    """What the objective config's terms (of weight other than 0) need of the classifier."""
    classes = term_classes(objective_cfg)
    return Needs(batchnorm=any(getattr(c, "reads_batchnorm", False) for c in classes),
                 splits=all(getattr(c, "splits", True) for c in classes),
                 layers=any(getattr(c, "reads_layer", False) for c in classes))
