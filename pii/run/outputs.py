"""What a run leaves in its output directory: stage images, a checkpoint per
completed stage, one PNG per class, a grid, and metrics.json."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from pii.core.observers import Observer
from pii.eval.results import METRICS, RunResult
from pii.files import write_atomic, write_json

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


class Saver(Observer):
    """Saves each stage's images and a resumable checkpoint when the stage ends."""

    def __init__(self, out_dir: Path, class_ids: list[int], param=None, elapsed=None):
        """`elapsed()`: the run's inversion seconds so far (those of the stages before a resume
        included), kept in the checkpoint so that a resumed run reports the whole run's time."""
        self.out_dir, self.class_ids, self.param, self.elapsed = Path(out_dir), class_ids, param, elapsed
        (self.out_dir / "stages").mkdir(parents=True, exist_ok=True)

    def stage_done(self, index, stage, image):
        save_grid(image, self.out_dir / "stages" / f"stage{index + 1}_{stage.size}px.png")
        checkpoint = {"stage": index, "image": image.cpu(), "class_ids": self.class_ids,
                      "rng": torch.get_rng_state()}
        seconds = self.elapsed() if self.elapsed else None
        if seconds is not None:
            checkpoint["seconds"] = seconds
        if self.param is not None:  # the param's own tensors (pii.core.param): resume continues from them exactly
            checkpoint["param"] = self.param.state_dict()
        if torch.cuda.is_available():
            checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()
        save_checkpoint(self.out_dir / CHECKPOINT, checkpoint)


def save_checkpoint(path: Path, state: dict) -> None:
    """Every checkpoint pii writes (invert.py's per stage, train_invert's generators): plain tensors
    (read back with weights_only=True), whole or not at all, so a failed write keeps the earlier one."""
    write_atomic(path, lambda f: torch.save(state, f))


def save_png(image: torch.Tensor, path: Path) -> None:
    write_atomic(path, lambda f: save_image(image.float().cpu(), f, format="png"))


def save_grid(images: torch.Tensor, path: Path) -> None:
    save_png(make_grid(images.float().cpu(), nrow=min(len(images), 8), padding=2, pad_value=1.0), path)


def save_images(out_dir: Path, image: torch.Tensor, result: RunResult) -> None:
    """One PNG per class (or per unit) and the grid of all of them (metrics.json, which marks the run
    finished, comes after the judges: pii.run.runner)."""
    out_dir = Path(out_dir)
    for img, entry in zip(image, result.classes or result.units or []):
        save_png(img, out_dir / entry.image)
    save_grid(image, out_dir / "grid.png")


def write_metrics(out_dir: Path, metrics: dict) -> None:
    """train_invert's metrics.json, a dict of its own (pii.feedforward.runner); invert.py's is pii.eval.results."""
    write_json(Path(out_dir) / METRICS, metrics)
