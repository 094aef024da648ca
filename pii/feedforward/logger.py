"""Where training metrics go: the shared `logger` group (conf/logger): none, or
W&B through `pii.run.tracking.init_run` (same modes, offline fallback as invert.py).
Each condition (logits, onehot) is its own W&B run with the same keys, the runs
of one train_invert job in one group, so a method and its baseline overlay on
one chart. Call `finish()` in a `finally`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from pii.errors import ConfigError
from pii.run import tracking


class Logger:
    """No-op logger."""

    def log(self, metrics: dict, step: int | None = None) -> None: ...

    def image(self, name: str, path: Path, step: int | None = None) -> None: ...

    def summary(self, metrics: dict) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class WandbLogger(Logger):
    def __init__(self, run_cfg: DictConfig, out_dir: Path, condition: str):
        import wandb

        self.wandb = wandb
        group, name = tracking.hydra_identity()
        job = out_dir.parent.name  # the train_invert job's output dir (out_dir is its <condition>/)
        self.run = tracking.init_run(run_cfg, out_dir, resume=bool(run_cfg.get("resume")), job_type="train_invert",
                                     name=f"{run_cfg.logger.run_name or name or job}/{condition}",
                                     group=f"{group}/{name}" if group else job)
        self.run.config.update({"condition": condition}, allow_val_change=True)

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def image(self, name, path, step=None):
        self.run.log({name: self.wandb.Image(str(path))}, step=step)

    def summary(self, metrics):
        self.run.summary.update(metrics)

    def finish(self, exit_code: int = 0):
        self.run.finish(exit_code=exit_code)


def build(run_cfg: DictConfig, out_dir: Path, condition: str, enabled: bool = True) -> Logger:
    """The logger of one condition's run, writing under `out_dir` (that condition's dir).
    `enabled=False` (non-main DDP processes) always gives the no-op logger."""
    backend = run_cfg.logger.backend
    if not enabled or backend == "none":
        return Logger()
    if backend == "wandb":
        out_dir.mkdir(parents=True, exist_ok=True)
        return WandbLogger(run_cfg, out_dir, condition)
    raise ConfigError(f"unknown logger.backend {backend!r}; use logger=none or logger=wandb")
