"""Classifiers to invert: a name and a weight source become a frozen, normalising model.

Weight sources (`model.weights`):
  pretrained          timm's own pretrained weights (needs the network, or a warm cache)
  package:<module>    a checkpoint shipped inside an installed Python package (offline)
  <path>              a local .pth/.pt/.safetensors file, loaded without running code: a state dict, a
                      training checkpoint or the robustness library's (pii.models.weights)
  random / null       random initialisation (tests, or training from scratch)
"""

from __future__ import annotations

import copy
import logging

import timm
import timm.data
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from timm.layers import BatchNormAct2d
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from pii.core.precision import PRECISIONS
from pii.errors import ConfigError
from pii.models import timm_extra  # noqa: F401  (registers pii_* architectures with timm)
from pii.models import device as device_policy
from pii.models.weights import load_weights, resolve_weights

log = logging.getLogger(__name__)

# `build`'s settings for a classifier to train, to judge with or to compare against: fp32, NCHW,
# BatchNorm kept, eager. An inversion's classifier has its own, from its config (pii.run.build.classifier).
PLAIN = {"precision": "fp32", "channels_last": False, "compile": False, "fold": False}


class Classifier(nn.Module):
    """A frozen classifier that takes [0, 1] pixels and normalises inside.

    Fixed-size models (ViT, Mixer, ...) get their input resized to
    `input_size`; convolutional ones see it at its own size.
    """

    def __init__(self, net: nn.Module, *, name: str, input_size: int, fixed_size: bool,
                 mean: list[float], std: list[float], num_classes: int,
                 precision: str, channels_last: bool):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.name, self.input_size, self.fixed_size, self.num_classes = name, input_size, fixed_size, num_classes
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be {' or '.join(PRECISIONS)}, got {precision!r}")
        self.precision, self.channels_last = precision, channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.eval()

    def train(self, mode: bool = True) -> "Classifier":
        # The classifier is never trained here: BatchNorm and dropout stay in eval mode.
        return super().train(False)

    def forward(self, x: torch.Tensor, eager: bool = False) -> torch.Tensor:
        """Logits of [0, 1] pixels; `eager`: bypass torch.compile (a one-off shape that should not compile)."""
        net = getattr(self.net, "_orig_mod", self.net) if eager else self.net
        if self.fixed_size and x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return net(x).float()


def build(cfg: DictConfig, device: torch.device | str, *, precision: str, channels_last: bool, compile: bool,
          fold: bool, key: str = "model", adapt: bool = True) -> Classifier:
    """Create the model named by `cfg.name` with timm and load its weights (`key`: where the config
    holds `cfg`, model or verifier.<name>, for messages). Weights from a file must give finite
    outputs on an ordinary image, else ConfigError naming the first layer that does not.

    `precision`, `channels_last`, `compile` and `fold` are an inversion's settings (`pii.run.build.classifier`,
    from its config); a classifier to train, to judge with or to compare against is built with
    PLAIN's. `fold`: BatchNorm folded into the convolution before it (see `fold_batchnorm`): the
    runner's choice (`fold_batchnorm=true`) unless the loss reads BatchNorm statistics.
    `compile`: torch.compile the network with static shapes: one graph per stage
    size, each specialised to its shape (and, on CUDA, autotuned for it). `adapt`: the device's
    changes to the network (pii.models.device.adapt_network); off, the network as timm makes it."""
    spec = model_spec(cfg, key)
    name = cfg.name
    weights = cfg.get("weights")
    kwargs = OmegaConf.to_container(cfg.kwargs, resolve=True) if cfg.get("kwargs") else {}
    pretrained = weights == "pretrained"
    path = resolve_weights(str(weights), f"{key}.weights") if weights not in (None, "random", "pretrained") else None
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=cfg.num_classes, **kwargs)
    except (OSError, RuntimeError, ConnectionError) as err:
        if not pretrained:
            raise
        raise ConfigError(
            f"could not fetch pretrained weights for {name!r} (offline? {type(err).__name__}); "
            f"download them on a machine with network and pass {key}.weights=/path/to/weights.pth") from None
    if path is not None:
        normalisation = load_weights(net, path, remap=bool(cfg.get("remap", False)), key=f"{key}.weights")
        if normalisation:  # a layer of the saved model (robustness library): it wins over the config's
            log.info("%s: mean %s, std %s from the checkpoint", name, normalisation["mean"], normalisation["std"])
            spec.update(normalisation)
    classifier = Classifier(net, name=name, num_classes=int(cfg.num_classes), precision=precision,
                            channels_last=channels_last, **spec)
    if path is not None and (layer := nonfinite_layer(classifier)) is not None:
        raise ConfigError(f"{key}.weights {str(path)!r}: model {name} gives nan or inf on an ordinary image, first "
                          f"at {layer}; the weights or statistics there are damaged")
    if fold:
        classifier.net = fold_batchnorm(classifier.net, classifier.input_size)
    device = torch.device(device)
    classifier = classifier.to(device)
    if adapt:
        device_policy.adapt_network(classifier.net, device, precision, classifier.input_size)
    if compile:
        classifier.net = torch.compile(classifier.net, dynamic=False)
    return classifier


def fold_batchnorm(net: nn.Module, size: int) -> nn.Module:
    """`net` with each BatchNorm merged into the convolution registered just before it.

    The classifier is frozen, so an eval-mode BatchNorm is a fixed per-channel affine map that the
    convolution's weights can absorb (torch's `fuse_conv_bn_eval`): one pass less over every
    activation, forward and backward (Lite0 fwd+bwd, 32 views at 160 px, fp32, 2 CPU cores: 0.74 ->
    0.45 s). Registration order is only a proxy for data flow, so the folded network must give the
    same logits as `net` on a probe image; where it does not, `net` is returned unchanged."""
    if not any(isinstance(m, nn.BatchNorm2d) for m in net.modules()):
        return net  # ViTs, Mixers: nothing to fold, and no copy of their weights
    folded, count = copy.deepcopy(net), 0
    for module in folded.modules():
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:]):
            if (isinstance(conv, nn.Conv2d) and type(bn) in (nn.BatchNorm2d, BatchNormAct2d)
                    and bn.track_running_stats and conv.out_channels == bn.num_features):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                # BatchNormAct2d is batch norm, then dropout, then the activation
                setattr(module, bn_name, nn.Sequential(bn.drop, bn.act) if type(bn) is BatchNormAct2d else nn.Identity())
                count += 1
    if not count:
        return net
    probe = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = net(probe), folded(probe)
    if not torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max())):
        log.warning("BatchNorm not folded in %s: the folded network's logits differ", type(net).__name__)
        return net
    return folded


def nonfinite_layer(classifier: Classifier) -> str | None:
    """Where `classifier` first turns finite numbers into nan or inf (the first layer, in the order
    they finish, whose inputs are finite and whose output is not) on a fixed random image, or None
    when its logits are finite."""
    names = {module: name for name, module in classifier.net.named_modules()}
    first: list[str] = []

    def finite(value) -> bool:
        return not (isinstance(value, torch.Tensor) and value.is_floating_point()) or bool(value.isfinite().all())

    def hook(module, args, output):
        if not first and all(finite(a) for a in args) and not finite(output):
            first.append(f"layer {names[module]!r}" if names[module] else "its output")

    handles = [module.register_forward_hook(hook) for module in names]
    probe = torch.rand(1, 3, classifier.input_size, classifier.input_size, generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            logits = classifier(probe.to(classifier.mean.device))
    finally:
        for handle in handles:
            handle.remove()
    return None if logits.isfinite().all() else (first[0] if first else "its output")


SPEC_KEYS = ("input_size", "fixed_size", "mean", "std")  # what timm knows of a pretrained model


def model_spec(cfg: DictConfig, key: str = "model") -> dict:
    """input_size, fixed_size, mean and std: the config's values where set, else timm's for `cfg.name`
    (`timm.data.resolve_data_config` over the name's pretrained config; no model is built). `key`:
    where the config holds `cfg` (model, verifier.<name>), for messages."""
    if OmegaConf.is_missing(cfg, "name"):
        raise ConfigError(f"{key}.name is not set; e.g. {key}.name=resnet18 (any name from timm.list_models())")
    if not cfg.name or not timm.is_model(cfg.name):
        group = "model" if key == "model" else "verifier"
        raise ConfigError(
            f"unknown timm model {key}.name={cfg.name!r}; pick a config with {group}=<name> (see conf/{group}/) "
            f"or any name from timm.list_models(), e.g. {key}.name=resnet18")
    pretrained_cfg = timm.models.get_pretrained_cfg(cfg.name)
    if pretrained_cfg is None:  # an architecture without pretrained weights (pii_mlp_mixer): the config says all
        unset = [name for name in SPEC_KEYS if cfg.get(name) is None]
        if unset:
            raise ConfigError(f"{key}.{unset[0]} is not set and timm has no default for {cfg.name!r}; "
                              f"set {key}.{unset[0]}=...")
    size = cfg.get("input_size")
    args = {"input_size": (3, size, size) if size is not None else None, "mean": cfg.get("mean"), "std": cfg.get("std")}
    data = timm.data.resolve_data_config(args, pretrained_cfg=pretrained_cfg.to_dict() if pretrained_cfg else None)
    fixed = cfg.get("fixed_size")
    return {"input_size": int(data["input_size"][-1]),
            "fixed_size": bool(pretrained_cfg.fixed_input_size if fixed is None else fixed),
            "mean": [float(v) for v in data["mean"]], "std": [float(v) for v in data["std"]]}
