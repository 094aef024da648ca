"""The classifier whose logits are inverted.

`classifier=small_cnn` (default): a small CNN trained by this project on the
training split, saved as a plain state dict (safetensors) and reused when the
file exists. `classifier=model`: any model of the `model` group, built by
`pii.models.build` (e.g. `model=resnet50` for an ImageNet folder).
Both come back as a `pii.models.Classifier` (frozen, takes [0, 1] pixels).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from pii import models
from pii.errors import ConfigError
from pii.feedforward.data import Data, load_all
from pii.models.robust import PGD, robust_accuracy

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
                             num_classes=num_classes)


def build(cfg: DictConfig, model_cfg: DictConfig | None, data: Data, resolution: int,
          device: torch.device, is_main: bool = True, barrier=lambda: None,
          data_cfg: DictConfig | None = None, robust_cfg: DictConfig | None = None) -> models.Classifier:
    """The classifier named by `cfg.kind`; ConfigError if its class count differs from the data's.

    The small CNN is trained once and reused from `checkpoint_path(...)`; `data_cfg` (the `data`
    group) and `robust_cfg` (the `robust` group: adversarial training) are part of that file's
    name, so a classifier trained on other data or otherwise is never reused.
    """
    if cfg.kind == "model":
        if model_cfg is None:
            raise ConfigError("classifier=model needs a model from the model group, e.g. model=resnet50")
        check_classes(int(model_cfg.num_classes), data)
        return models.build(model_cfg, device)
    if cfg.kind != "small_cnn":
        raise ConfigError(f"classifier.kind={cfg.kind!r} unknown; use classifier=small_cnn or classifier=model")
    num_classes = int(cfg.num_classes) if cfg.get("num_classes") is not None else data.num_classes
    check_classes(num_classes, data)
    path = checkpoint_path(cfg, data_cfg, resolution, robust_cfg)
    record = path.with_suffix(".json")  # how it was trained and how well it did
    net = SmallCNN(num_classes, int(cfg.width))
    if not path.exists() and is_main:
        accuracy = train_small_cnn(net, data, cfg, resolution, robust_cfg)
        path.parent.mkdir(parents=True, exist_ok=True)
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        record.write_text(json.dumps({"settings": shaping_settings(cfg, data_cfg, resolution, robust_cfg),
                                      "held_out_accuracy": accuracy}, indent=2) + "\n")
        log.info("saved the classifier to %s", path)
    barrier()  # other processes wait for the main one to train and save it
    models.load_weights(net, path, key="classifier.checkpoint")
    classifier = wrap(net, num_classes, resolution).to(device)
    accuracy = json.loads(record.read_text()).get("held_out_accuracy") if record.is_file() else None
    log.info("classifier %s (%d classes) from %s, held-out accuracy %s", classifier.name, num_classes, path,
             "unknown (no record of its training)" if accuracy is None else f"{accuracy:.3f}")
    return classifier


def shaping_settings(cfg: DictConfig, data_cfg: DictConfig | None, resolution: int,
                     robust_cfg: DictConfig | None = None) -> dict:
    """Everything that shapes the small CNN's weights: the data, the resolution, its training settings,
    the adversarial training's attack (absent for natural training: those files keep their names)."""
    data = OmegaConf.to_container(data_cfg, resolve=True) if data_cfg is not None else None
    if isinstance(data, dict):
        data.pop("download", None)  # where the data came from, not what it is
        data.pop("_target_", None)  # how it is built (name says which): files named before it keep their names
    settings = {"data": data, "resolution": resolution,
                **{k: cfg.get(k) for k in ("num_classes", "width", "epochs", "batch_size", "lr", "seed")}}
    attack = PGD.training(robust_cfg)
    if attack is not None:
        settings["robust"] = vars(attack)
    return settings


def checkpoint_path(cfg: DictConfig, data_cfg: DictConfig | None, resolution: int,
                    robust_cfg: DictConfig | None = None) -> Path:
    """`classifier.checkpoint` when set; else a file in `classifier.cache_dir` named by a hash of
    `shaping_settings`, so a classifier is reused only by runs that would train the same one."""
    if cfg.get("checkpoint"):
        return Path(str(cfg.checkpoint)).expanduser()
    settings = shaping_settings(cfg, data_cfg, resolution, robust_cfg)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    name = (settings["data"] or {}).get("name", "data")
    return Path(str(cfg.cache_dir)).expanduser() / f"{name}_{resolution}px_small_cnn_{digest}.safetensors"


def check_classes(num_classes: int, data: Data) -> None:
    if num_classes != data.num_classes:
        raise ConfigError(f"the classifier has {num_classes} classes but the data has {data.num_classes}; "
                          f"pick a classifier trained on these classes (or a matching data folder)")


def train_small_cnn(net: SmallCNN, data: Data, cfg: DictConfig, resolution: int,
                    robust_cfg: DictConfig | None = None) -> float:
    """Supervised training with Adam and a cosine schedule, adversarial where `robust_cfg` says
    (each batch replaced by its PGD attack); returns (and logs) held-out accuracy."""
    x, y = load_all(data.train)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    model = wrap(net, data.num_classes, resolution)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg.lr))
    steps = int(cfg.epochs) * (len(x) // int(cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    net.requires_grad_(True)
    attack = PGD.training(robust_cfg)
    for step in range(steps):
        idx = torch.randint(len(x), (int(cfg.batch_size),), generator=gen)
        xb = x[idx]
        # small random shifts: a classifier that generalises, not one that memorises pixels
        shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
        xb = torch.roll(xb, shifts=shift, dims=(2, 3))
        if attack is not None:
            xb = attack.at(step / steps)(model, xb, y[idx])
        loss = F.cross_entropy(net((xb - model.mean) / model.std), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    net.eval().requires_grad_(False)
    xt, yt = load_all(data.test)
    with torch.no_grad():
        acc = (model(xt).argmax(-1) == yt).float().mean().item()
    log.info("trained the small CNN classifier: %d steps, held-out accuracy %.3f", steps, acc)
    if attack is not None:
        log.info("held-out accuracy under PGD-%s at epsilon %g: %.3f", attack.norm, attack.epsilon,
                 robust_accuracy(model, xt, yt, PGD.evaluation(robust_cfg)))
    return acc


def penultimate(classifier: models.Classifier, x: torch.Tensor) -> torch.Tensor:
    """The classifier's features before its last linear layer (timm's pre_logits)."""
    if classifier.fixed_size and x.shape[-1] != classifier.input_size:
        x = F.interpolate(x, size=(classifier.input_size,) * 2, mode="bilinear", align_corners=False)
    net = classifier.net
    return net.forward_head(net.forward_features((x - classifier.mean) / classifier.std), pre_logits=True).float()
