"""What a run leaves in its output directory: stage images, a checkpoint per
completed stage, one PNG per class, a grid, and metrics.json."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor
from torchvision.utils import make_grid, save_image

from pii import results
from pii.errors import ConfigError
from pii.observers import Observer
from pii.results import METRICS, RunResult

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class Saver(Observer):
    """Saves each stage's images and a resumable checkpoint when the stage ends."""

    def __init__(self, out_dir: Path, class_ids: list[int], param=None):
        self.out_dir, self.class_ids, self.param = Path(out_dir), class_ids, param
        (self.out_dir / "stages").mkdir(parents=True, exist_ok=True)

    def stage_done(self, index, stage, image):
        save_grid(image, self.out_dir / "stages" / f"stage{index + 1}_{stage.size}px.png")
        checkpoint = {"stage": index, "image": image.cpu(), "class_ids": self.class_ids,
                      "rng": torch.get_rng_state()}
        if self.param is not None:  # the param's own tensors (pii.param): resume continues from them exactly
            checkpoint["param"] = self.param.state_dict()
        if torch.cuda.is_available():
            checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()
        tmp = self.out_dir / (CHECKPOINT + ".tmp")
        torch.save(checkpoint, tmp)
        tmp.replace(self.out_dir / CHECKPOINT)  # never leave a half-written checkpoint


def save_grid(images: torch.Tensor, path: Path) -> None:
    save_image(make_grid(images.float().cpu(), nrow=min(len(images), 8), padding=2, pad_value=1.0), path)


def save_results(out_dir: Path, image: torch.Tensor, result: RunResult) -> None:
    """One PNG per class, the grid of all classes, and metrics.json."""
    out_dir = Path(out_dir)
    for img, entry in zip(image, result.classes):
        save_image(img.float().cpu(), out_dir / entry.image)
    save_grid(image, out_dir / "grid.png")
    results.write(out_dir / METRICS, result)


def load_png(path: Path) -> torch.Tensor:
    """A saved image as [3, H, W] pixels in [0, 1] (8-bit, as saved); ConfigError if it cannot be read."""
    try:
        with Image.open(path) as img:
            return pil_to_tensor(img.convert("RGB")).float() / 255
    except (OSError, ValueError, SyntaxError) as err:  # missing, truncated or not an image (PIL's own types)
        raise ConfigError(f"cannot read image {str(path)!r} ({type(err).__name__}: {str(err)[:80]})") from None


def load_tensors(path: Path, key: str, map_location="cpu") -> dict:
    """A checkpoint of plain tensors (torch.load with weights_only=True, never code); a ConfigError
    naming `key` and the file when it is damaged or would run code when loaded."""
    try:
        with warnings.catch_warnings():  # torch warns about what it is about to refuse; the refusal says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for one meaning: not a plain checkpoint
        raise unloadable(path, key, err) from None


def unloadable(path: Path, key: str, err: Exception) -> ConfigError:
    """Why a checkpoint could not be read, for the user: it could run code, or it is damaged."""
    with open(path, "rb") as f:
        raw_pickle = f.read(1) == b"\x80"  # pickle's PROTO opcode: a pickled object, not torch's zip format
    if raw_pickle or "global" in str(err).lower():
        return ConfigError(f"refusing to load {key} {str(path)!r}: it is a pickle of objects, not plain tensors, "
                           f"and loading it could run code; save plain weights with torch.save(state_dict, path)")
    return ConfigError(f"{key} {str(path)!r} is damaged or not a checkpoint ({type(err).__name__}: "
                       f"{(str(err).strip().splitlines() or [''])[0][:80]})")


def write_metrics(out_dir: Path, metrics: dict) -> None:
    """train_invert's metrics.json, a dict of its own (pii.feedforward.runner); invert.py's is pii.results."""
    (Path(out_dir) / METRICS).write_text(json.dumps(metrics, indent=2) + "\n")
