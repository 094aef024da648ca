"""The classifier whose logits are inverted.

The `classifier` group's `_target_` names the function that builds it.
`classifier=small_cnn` (default, `small_cnn`): a small CNN trained by this project on
the training split, saved as a plain state dict (safetensors) and reused when the
file exists. `classifier=model` (`model_group`): any model of the `model` group, built by
`pii.models.build` (e.g. `model=resnet50` for an ImageNet folder).
Both come back as a `pii.models.Classifier` (frozen, takes [0, 1] pixels).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pii import models
from pii.errors import ConfigError
from pii.feedforward.config import TRAIN_INVERT_CONF_DIR
from pii.feedforward.data import Data, load_all
from pii.files import write_atomic, write_json
from pii.models.robust import PGD, robust_accuracy
from pii.models.training import accuracy, fit
from pii.run.config import target

log = logging.getLogger(__name__)


class SmallCNN(nn.Module):
    """conv-BN-ReLU x 4 with two poolings, global average pool, linear head.
    Follows timm's forward_features / forward_head(pre_logits) split so that
    `penultimate` treats it like any timm model."""

    def __init__(self, num_classes: int, width: int = 32, channels: int = 3):
        super().__init__()
        w = width

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(*block(channels, w), *block(w, w), nn.MaxPool2d(2),
                                      *block(w, 2 * w), nn.MaxPool2d(2), *block(2 * w, 4 * w))
        self.fc = nn.Linear(4 * w, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


MEAN, STD = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]


def wrap(net: nn.Module, num_classes: int, resolution: int) -> models.Classifier:
    return models.Classifier(net, name="small_cnn", input_size=resolution, fixed_size=False, mean=MEAN, std=STD,
                             num_classes=num_classes, precision="fp32", channels_last=False)


RUN_ARGUMENTS = ("data", "resolution", "device", "model_cfg", "data_cfg", "robust_cfg", "is_main", "barrier")


def builder(cfg: DictConfig) -> Callable[..., models.Classifier]:
    """The `classifier` group's `_target_` (one of the functions below) with the group's keys bound;
    checks the group without building anything."""
    return target(cfg, "classifier", *RUN_ARGUMENTS, root=TRAIN_INVERT_CONF_DIR)


def build(cfg: DictConfig, model_cfg: DictConfig | None, data: Data, resolution: int,
          device: torch.device, is_main: bool = True, barrier=lambda: None,
          data_cfg: DictConfig | None = None, robust_cfg: DictConfig | None = None) -> models.Classifier:
    """The classifier of the `classifier` group; ConfigError if its class count differs from the data's.
    `data_cfg` (the `data` group) and `robust_cfg` (the `robust` group: adversarial training) are part
    of the small CNN's file name (`checkpoint_path`), so one trained on other data or otherwise is never
    reused; `is_main` and `barrier`: under DDP only the main process trains it, the others wait and load it."""
    return builder(cfg)(data=data, resolution=resolution, device=device, model_cfg=model_cfg, data_cfg=data_cfg,
                        robust_cfg=robust_cfg, is_main=is_main, barrier=barrier)


def model_group(*, data: Data, resolution: int, device: torch.device, model_cfg: DictConfig | None,
                data_cfg=None, robust_cfg=None, is_main=True, barrier=None) -> models.Classifier:
    """classifier=model: the model of the `model` group, built by `pii.models.build` at its own input size."""
    if model_cfg is None:
        raise ConfigError("classifier=model needs a model from the model group, e.g. model=resnet50")
    check_classes(int(model_cfg.num_classes), data)
    return models.build(model_cfg, device, **models.PLAIN)


def small_cnn(*, data: Data, resolution: int, device: torch.device, data_cfg: DictConfig | None = None,
              robust_cfg: DictConfig | None = None,
              is_main: bool = True, barrier=lambda: None, model_cfg=None, num_classes: int | None, width: int,
              epochs: int, batch_size: int, lr: float, seed: int, checkpoint: str | None,
              cache_dir: str) -> models.Classifier:
    """classifier=small_cnn: a SmallCNN trained once on the training split (pii.models.training.fit,
    random shifts of up to 2 px, its own seed, the caller's random state left alone) and reused from
    `checkpoint_path(...)` by every run that would train the same one."""
    settings = dict(num_classes=num_classes, width=width, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                    checkpoint=checkpoint, cache_dir=cache_dir)
    num_classes = int(num_classes) if num_classes is not None else data.num_classes
    check_classes(num_classes, data)
    path = checkpoint_path(settings, data_cfg, resolution, robust_cfg)
    check_named_checkpoint(settings)
    record = path.with_suffix(".json")  # how it was trained and how well it did
    net = SmallCNN(num_classes, int(width))
    if not path.exists() and is_main:
        classifier = wrap(net, num_classes, resolution)
        with torch.random.fork_rng(devices=[]):  # loading draws too (DataLoader's seed): all inside
            torch.manual_seed(int(seed))
            attack = PGD.training(robust_cfg)
            fit(classifier, *load_all(data.train), int(epochs), lr=float(lr), batch_size=int(batch_size),
                attack=attack)
            held_out = accuracy(classifier, *load_all(data.test))
        log.info("trained the small CNN classifier: %d epochs, held-out accuracy %.3f", int(epochs), held_out)
        if attack is not None:
            log.info("held-out accuracy under PGD-%s at epsilon %g: %.3f", attack.norm, attack.epsilon,
                     robust_accuracy(classifier, *load_all(data.test), PGD.evaluation(robust_cfg)))
        path.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save

        write_atomic(path, lambda f: f.write(save({k: v.contiguous() for k, v in net.state_dict().items()})))
        write_json(record, {"settings": shaping_settings(settings, data_cfg, resolution, robust_cfg), "held_out_accuracy": held_out})
        log.info("saved the classifier to %s", path)
    barrier()  # other processes wait for the main one to train and save it
    models.load_weights(net, path, key="classifier.checkpoint")
    classifier = wrap(net, num_classes, resolution).to(device)
    held_out = json.loads(record.read_text()).get("held_out_accuracy") if record.is_file() else None
    log.info("classifier %s (%d classes) from %s, held-out accuracy %s", classifier.name, num_classes, path,
             "unknown (no record of its training)" if held_out is None else f"{held_out:.3f}")
    return classifier


# How the weights were trained, part of the cache key: a file trained by an earlier recipe (Adam,
# cosine decay, batches drawn with replacement, wrap-around shifts) is not taken for one of this.
TRAINED_BY = "pii.models.training.fit"


def shaping_settings(cfg: Mapping, data_cfg: DictConfig | None, resolution: int,
                     robust_cfg: DictConfig | None = None) -> dict:
    """Everything that shapes the small CNN's weights: the data, the resolution, its training settings,
    the adversarial training's attack (absent for natural training)."""
    data = OmegaConf.to_container(data_cfg, resolve=True) if data_cfg is not None else None
    if isinstance(data, dict):
        data.pop("download", None)  # where the data came from, not what it is
        data.pop("_target_", None)  # how it is built (name says which): files named before it keep their names
    settings = {"data": data, "resolution": resolution, "trained_by": TRAINED_BY,
                **{k: cfg.get(k) for k in ("num_classes", "width", "epochs", "batch_size", "lr", "seed")}}
    attack = PGD.training(robust_cfg)
    if attack is not None:
        settings["robust"] = vars(attack)
    return settings


def checkpoint_path(cfg: Mapping, data_cfg: DictConfig | None, resolution: int,
                    robust_cfg: DictConfig | None = None) -> Path:
    """`classifier.checkpoint` when set; else a file in `classifier.cache_dir` named by a hash of
    `shaping_settings`, so a classifier is reused only by runs that would train the same one."""
    if cfg.get("checkpoint"):
        return Path(str(cfg["checkpoint"])).expanduser()
    settings = shaping_settings(cfg, data_cfg, resolution, robust_cfg)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    name = (settings["data"] or {}).get("name", "data")
    return Path(str(cfg["cache_dir"])).expanduser() / f"{name}_{resolution}px_small_cnn_{digest}.safetensors"


def check_named_checkpoint(cfg: Mapping) -> None:
    """`classifier.checkpoint` names a classifier to use: it must exist (a file of that name is never
    trained and saved in its place; the cache is for that)."""
    if cfg.get("checkpoint"):
        path = Path(str(cfg["checkpoint"])).expanduser()
        if not path.is_file():
            raise ConfigError(f"classifier.checkpoint {str(path)!r} does not exist; name a saved classifier, or leave "
                              f"it unset to train one and keep it under classifier.cache_dir")


def check_classes(num_classes: int, data: Data) -> None:
    if num_classes != data.num_classes:
        raise ConfigError(f"the classifier has {num_classes} classes but the data has {data.num_classes}; "
                          f"pick a classifier trained on these classes (or a matching data folder)")


def penultimate(classifier: models.Classifier, x: torch.Tensor) -> torch.Tensor:
    """The classifier's features before its last linear layer (timm's pre_logits)."""
    if classifier.fixed_size and x.shape[-1] != classifier.input_size:
        x = F.interpolate(x, size=(classifier.input_size,) * 2, mode="bilinear", align_corners=False)
    net = classifier.net
    return net.forward_head(net.forward_features((x - classifier.mean) / classifier.std), pre_logits=True).float()
