"""Where training metrics go: `logger=none` (the log file only) or `logger=wandb`.
A minimal adapter for train_invert; call `finish()` in a `finally`."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class Logger:
    """No-op logger."""

    def log(self, metrics: dict, step: int | None = None) -> None: ...

    def image(self, name: str, path: Path, step: int | None = None) -> None: ...

    def summary(self, metrics: dict) -> None: ...

    def finish(self) -> None: ...


class WandbLogger(Logger):
    def __init__(self, cfg: DictConfig, run_config: dict, out_dir: Path):
        import wandb

        self.wandb = wandb
        self.run = wandb.init(project=cfg.project, group=cfg.get("group"), name=cfg.get("name"), mode=cfg.mode,
                              dir=str(out_dir), config=run_config)

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def image(self, name, path, step=None):
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def summary(self, metrics):
        for key, value in metrics.items():
            self.run.summary[key] = value

    def finish(self):
        self.run.finish()


def build(cfg: DictConfig, run_cfg: DictConfig, out_dir: Path, enabled: bool = True) -> Logger:
    """`enabled=False` (non-main DDP processes) always gives the no-op logger."""
    if not enabled or cfg.name == "none":
        return Logger()
    if cfg.name == "wandb":
        return WandbLogger(cfg, OmegaConf.to_container(run_cfg, resolve=True), out_dir)
    from pii.errors import ConfigError

    raise ConfigError(f"logger={cfg.name!r} unknown; use logger=none or logger=wandb")
