"""Starting a run from an earlier one: `resume=<dir>` continues a killed run
at its last completed stage; `init_from=<dir>` starts from another run's
final images instead of noise (PII, then DeepInversion: paper Fig. 9)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from pii.errors import ConfigError
from pii.outputs import CHECKPOINT, METRICS, load_png

log = logging.getLogger(__name__)


def resumed_config(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """For `resume=<dir>`: the config that run was started with, writing into
    <dir>. Keys named in `overrides` (default: this command line's, e.g.
    device=cpu or logger=wandb) take this invocation's values."""
    if overrides is None:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    run_dir = Path(str(cfg.resume)).expanduser()
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={run_dir}: there is no .hydra/config.yaml there; "
                          f"pass the output directory of an earlier invert.py run")
    resumed = OmegaConf.load(saved)
    with open_dict(resumed):
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key not in ("resume", "output_dir") and OmegaConf.select(cfg, key) is not None:
                OmegaConf.update(resumed, key, OmegaConf.select(cfg, key), force_add=True)
        resumed.output_dir, resumed.resume = str(run_dir), str(run_dir)
    return resumed


def load_checkpoint(run_dir: Path) -> dict | None:
    """The checkpoint of the last completed stage (pii.outputs.Saver), or None."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)  # plain tensors only, never code


def load_images(run_dir: Path, class_ids: list[int]) -> torch.Tensor:
    """A finished run's per-class PNGs, in the order of `class_ids`, as [0, 1] floats."""
    run_dir = Path(str(run_dir)).expanduser()
    metrics_path = run_dir / METRICS
    if not metrics_path.is_file():
        raise ConfigError(f"init_from={run_dir}: no {METRICS} there; pass the output directory of a finished run")
    files = {e["class_id"]: run_dir / e["image"] for e in json.loads(metrics_path.read_text())["classes"]}
    missing = [c for c in class_ids if c not in files]
    if missing:
        raise ConfigError(f"init_from={run_dir} has no image for class {missing}; it has classes {sorted(files)}")
    return torch.stack([load_png(files[c]) for c in class_ids])


def starting_point(cfg: DictConfig, class_ids: list[int], num_stages: int,
                   device: torch.device) -> tuple[torch.Tensor | None, int]:
    """(start, first stage) for pii.inversion.invert: (None, 0) starts from noise. `start` is a
    checkpoint's param state (a dict, pii.param.Param.load_state_dict) or images.

    Resuming also restores the random state saved with the checkpoint, so the
    resumed run draws what the uninterrupted run would have drawn.
    """
    if cfg.get("resume"):
        checkpoint = load_checkpoint(Path(cfg.output_dir))
        if checkpoint is None:
            log.warning("resume: no finished stage in %s; starting from the first stage", cfg.output_dir)
            return None, 0
        if list(checkpoint["class_ids"]) != class_ids:
            raise ConfigError(f"resume: the checkpoint holds classes {checkpoint['class_ids']}, not {class_ids}")
        first = int(checkpoint["stage"]) + 1
        if first > num_stages:
            raise ConfigError(f"resume: the checkpoint is at stage {first} but the schedule has {num_stages} stages")
        torch.set_rng_state(checkpoint["rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        log.info("resuming %s after stage %d of %d", cfg.output_dir, first, num_stages)
        return checkpoint.get("param", checkpoint["image"].to(device)), first
    if cfg.get("init_from"):
        log.info("starting from the images of %s", cfg.init_from)
        return load_images(cfg.init_from, class_ids).to(device), 0
    return None, 0
