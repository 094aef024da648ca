"""Datasets for feedforward inversion, and the deterministic batch order.

`digits` (default, offline): sklearn's 8x8 digits, upscaled to the generator's
resolution, 3 channels, pixels in [0, 1]. `cifar10`: torchvision's CIFAR-10
(downloaded only with data.download=true). `folder`: any torchvision
ImageFolder tree (e.g. ImageNet), resized and centre-cropped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset, Subset, TensorDataset

from pii.errors import ConfigError
from pii.feedforward.config import TRAIN_INVERT_CONF_DIR
from pii.models.training import split
from pii.run.config import target

log = logging.getLogger(__name__)


@dataclass
class Data:
    train: Dataset          # items: (image [3, R, R] in [0, 1], label)
    test: Dataset
    num_classes: int
    class_names: list[str]


def build(cfg: DictConfig, resolution: int) -> Data:
    """The `data` group's train and held-out images at `resolution` px."""
    return builder(cfg)(resolution=resolution)


def builder(cfg: DictConfig) -> Callable[..., Data]:
    """The `data` group's builder with its arguments bound, without loading anything (so it also checks
    the group): `_target_` names one of the functions below (hydra.utils.instantiate) and every other key
    is its argument, but `name`, the data's label in logs."""
    return target(cfg, "data", "resolution", root=TRAIN_INVERT_CONF_DIR)


def held_out(ds: Dataset, test_fraction: float, split_seed: int) -> tuple[Subset, Subset]:
    """(train, test) subsets of `ds`: the fixed seeded split (pii.models.training.split), each in index order."""
    train_idx, test_idx = split(len(ds), float(test_fraction), int(split_seed), key="data.test_fraction")
    return Subset(ds, sorted(train_idx)), Subset(ds, sorted(test_idx))


def digits(resolution: int, test_fraction: float, split_seed: int) -> Data:
    from pii.models.digits import load_digits

    x, y = load_digits(resolution)
    train, test = held_out(TensorDataset(x, y.long()), test_fraction, split_seed)
    return Data(train, test, 10, [str(i) for i in range(10)])


def _transform(resolution: int):
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resolution), transforms.CenterCrop(resolution),
                               transforms.ToTensor()])


def cifar10(resolution: int, root: str, download: bool, max_test: int | None, split_seed: int) -> Data:
    from torchvision.datasets import CIFAR10

    root = Path(root).expanduser()
    try:
        train = CIFAR10(str(root), train=True, download=bool(download), transform=_transform(resolution))
        test = CIFAR10(str(root), train=False, download=bool(download), transform=_transform(resolution))
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise ConfigError(f"CIFAR-10 not found under data.root={str(root)!r} ({err}); "
                          f"pass data.download=true once (needs the network) or point data.root at it") from None
    test = limit(test, max_test, int(split_seed))
    return Data(train, test, len(train.classes), list(train.classes))


def folder(resolution: int, root: str, test_root: str | None, test_fraction: float, max_test: int | None,
           split_seed: int) -> Data:
    """`root` holds one sub-folder per class; `test_root` (optional) is the held-out tree, else a split."""
    from torchvision.datasets import ImageFolder

    def load(path) -> ImageFolder:
        p = Path(str(path)).expanduser()
        if not p.is_dir():
            raise ConfigError(f"data folder {str(p)!r} does not exist; pass data.root=/path/to/images "
                              f"(one sub-folder per class, as torchvision's ImageFolder expects)")
        try:
            return ImageFolder(str(p), transform=_transform(resolution))
        except (FileNotFoundError, RuntimeError) as err:
            raise ConfigError(f"data folder {str(p)!r} holds no images in class sub-folders ({err})") from None

    train = load(root)
    if test_root:
        test = load(test_root)
        if test.classes != train.classes:
            raise ConfigError(f"data.test_root has classes {test.classes[:5]}... but data.root has {train.classes[:5]}...")
    else:
        train, test = held_out(train, test_fraction, split_seed)
    test = limit(test, max_test, int(split_seed))
    classes = train.dataset.classes if isinstance(train, Subset) else train.classes
    return Data(train, test, len(classes), list(classes))


def limit(ds: Dataset, max_items, seed: int) -> Dataset:
    if max_items is None or len(ds) <= int(max_items):
        return ds
    perm = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[: int(max_items)]
    return Subset(ds, sorted(perm.tolist()))


def load_all(ds: Dataset, batch_size: int = 256, workers: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image and label of a (small) dataset as two tensors."""
    xs, ys = [], []
    for x, y in torch.utils.data.DataLoader(ds, batch_size=batch_size, num_workers=workers):
        xs.append(x)
        ys.append(torch.as_tensor(y))
    return torch.cat(xs), torch.cat(ys)


class StepBatches(torch.utils.data.Sampler):
    """Batch indices as a pure function of (seed, step): resuming at step s replays exactly
    the batches a clean run would have seen from s on. Under DDP each rank takes its slice."""

    def __init__(self, n: int, batch_size: int, seed: int, start_step: int = 0, steps: int | None = None,
                 rank: int = 0, world: int = 1):
        if batch_size % world:
            raise ConfigError(f"schedule.batch_size={batch_size} must be divisible by the number of processes ({world})")
        if batch_size > n:
            raise ConfigError(f"schedule.batch_size={batch_size} is larger than the training set ({n} images)")
        self.n, self.batch, self.seed, self.start, self.steps = n, batch_size, seed, start_step, steps
        self.rank, self.world = rank, world
        self.per_epoch = n // batch_size

    def batch_at(self, step: int) -> list[int]:
        epoch, i = divmod(step, self.per_epoch)
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + epoch))
        return perm[i * self.batch:(i + 1) * self.batch][self.rank::self.world].tolist()

    def __iter__(self):
        step = self.start
        while self.steps is None or step < self.steps:
            yield self.batch_at(step)
            step += 1

    def __len__(self) -> int:
        return (self.steps - self.start) if self.steps is not None else 2 ** 31
