"""Experiment tracking (`logger` config group): none, or Weights & Biases, for invert.py and
train_invert.py alike.

The group's `_target_` names the tracker class (`Tracker`: none; `WandbTracker`), so a new
tracker is a class plus a YAML file in conf/logger/. For an inversion the tracker is an Observer
like the progress bar and the saver: the loop reports events to it and never knows W&B exists;
train_invert calls its log / image / summary. `opened(...)` / `start(...)` are context managers,
so the run is finished in a `finally` even when the job fails or is interrupted (marked failed
with exit code 1).
"""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import torch
from omegaconf import DictConfig, OmegaConf

from pii.core.observers import Observer
from pii.core.schedule import Stage
from pii.errors import ConfigError
from pii.eval.results import METRICS, RunResult, image_names
from pii.models.classes import class_key
from pii.run.config import target

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")
RUN_ID_FILE = "wandb-run-id"  # in the job's output dir: a resumed run continues the same W&B run


def resolve_mode(configured: str) -> str:
    """WANDB_MODE wins over logger.mode; online without an API key becomes offline."""
    mode = os.environ.get("WANDB_MODE") or str(configured)
    mode = {"dryrun": "offline", "run": "online"}.get(mode, mode)
    if mode not in MODES:
        raise ConfigError(f"logger.mode (or WANDB_MODE) must be one of {', '.join(MODES)}, got {mode!r}")
    if mode == "online" and not has_api_key():
        log.warning("W&B: no API key (WANDB_API_KEY or ~/.netrc); logging offline, upload later with `wandb sync`")
        mode = "offline"
    return mode


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def hydra_identity() -> tuple[str | None, str | None]:
    """(group, name) of this Hydra job: the sweep dir's name groups a multirun's
    jobs; a job is named by its number and the overrides that the sweep varies
    (those not on the sweep's own command line). (None, None) outside Hydra."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, None
    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return None, hc.job.override_dirname or None
    try:  # written by the sweeper before any job starts; the last override of a key wins
        sweep = OmegaConf.load(Path(hc.sweep.dir) / "multirun.yaml").hydra.overrides.task
        fixed = dict(o.split("=", 1) for o in sweep if "=" in o)
    except (OSError, AttributeError, KeyError, ValueError):
        fixed = {}
    swept = [o for o in hc.overrides.task if "=" in o and fixed.get(o.split("=", 1)[0]) != o.split("=", 1)[1]]
    return Path(hc.sweep.dir).name, f"{hc.job.num}_{','.join(swept) or 'default'}"


class Tracker(Observer):
    """logger=none: tracks nothing. Every tracker offers the inversion loop's Observer hooks, and
    log / image / summary for train_invert's loop; `finish` ends its run (`opened` calls it)."""

    def __init__(self, **run_and_settings):
        """Takes (and ignores) what a tracker is built with: the run's identity (`opened`)."""

    def watch_inversion(self, class_ids: list[int], num_classes: int, stages: list[Stage],
                        unit_keys: list[str] | None = None) -> Tracker:
        """Get ready for an inversion of `class_ids` in `stages` (its per-class keys and global step);
        `unit_keys` (<layer>_<unit>): the images are made for units, whose activation is logged."""
        return self

    def log(self, metrics: dict, step: int | None = None) -> None: ...

    def image(self, name: str, image: Path | torch.Tensor, step: int | None = None, caption: str | None = None) -> None:
        ...

    def summary(self, metrics: dict) -> None: ...

    def finish(self, exit_code: int = 0) -> None: ...


class WandbTracker(Tracker):
    """One Weights & Biases run (logger=wandb), offline inside `out_dir` when it must be.

    For an inversion it logs the loss and each class's target probability whenever the loop
    reports them (every `log_every` steps and at each stage's last) against the global step,
    each class's image at the end of every stage; at the end a per-class table (image, own
    probability, each judge's verdict), the summary (the judges' top-1 / top-5 / mean probability
    first) and the images as an artifact. train_invert logs through log / image / summary.
    """

    def __init__(self, *, config: DictConfig, out_dir: Path, job_type: str = "invert", job_name: str | None = None,
                 job_group: str | None = None, condition: str | None = None, mode: str, project: str,
                 entity: str | None, group: str | None, run_name: str | None, tags: list[str], init_timeout: float):
        """`config` (the run's whole config) is logged with the Hydra choices; a resumed run (its
        `resume`) continues the W&B run whose id is in `out_dir`. The run is named `run_name`, else
        `job_name`, else the Hydra job's; grouped by `group`, else `job_group`, else the Hydra sweep.
        `condition` (train_invert: one run per condition) ends the name and goes into the config.
        Online but unreachable (init_timeout seconds): one warning, then offline."""
        import wandb

        self.wandb = wandb
        mode = resolve_mode(mode)
        hydra_group, hydra_name = hydra_identity()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        id_file = out_dir / RUN_ID_FILE
        run_id = id_file.read_text().strip() if config.get("resume") and id_file.is_file() else None
        logged = OmegaConf.to_container(config, resolve=True)
        logged["choices"] = hydra_choices()
        # a continued run keeps its name (a resumed sweep numbers the jobs it launches anew)
        name = run_name or job_name or (None if run_id else hydra_name)
        if condition:
            name, logged["condition"] = f"{name}/{condition}" if name else condition, condition
        kwargs = dict(project=project, entity=entity, group=group or job_group or hydra_group, name=name,
                      tags=list(tags), job_type=job_type, dir=str(out_dir), config=logged, id=run_id,
                      resume="allow" if run_id else None,
                      reinit="create_new",  # train_invert keeps one run per condition open at once
                      settings=wandb.Settings(init_timeout=float(init_timeout), silent=True))
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as err:  # network trouble of any kind must not cost the run
            if mode != "online":
                raise
            log.warning("W&B: could not reach the server (%s); logging offline, upload later with `wandb sync`",
                        type(err).__name__)
            mode = "offline"
            self.run = wandb.init(mode=mode, **kwargs)
        if self.run.id:
            id_file.write_text(self.run.id + "\n")
        log.info("W&B %s run %s%s in %s", mode, self.run.name, f" (group {self.run.group})" if self.run.group else "",
                 self.run.dir)

    def log(self, metrics, step=None):
        self.run.log(metrics, step=step)

    def image(self, name, image, step=None, caption=None):
        self.run.log({name: self._image(image, caption)}, step=step)

    def summary(self, metrics):
        self.run.summary.update(metrics)

    def finish(self, exit_code=0):
        self.run.finish(exit_code=exit_code)

    def watch_inversion(self, class_ids, num_classes, stages, unit_keys=None):
        self.class_ids = class_ids
        self.keys = unit_keys or [name.removesuffix(".png") for name in
                                  image_names([class_key(c, num_classes) for c in class_ids])]
        self.score = "activation" if unit_keys else "p_target"  # what the loop reports of each image's target
        # global step of each stage's first step, so a resumed run continues the same x axis
        steps = [s.steps for s in stages]
        self.offsets = [sum(steps[:i]) for i in range(len(stages))]
        self.run.define_metric("step")
        self.run.define_metric("loss", step_metric="step", summary="last")
        self.run.define_metric(f"{self.score}/*", step_metric="step", summary="last")
        self.run.define_metric("stage", step_metric="step")
        return self

    def step_done(self, index, step, loss, probs):
        row = {"step": self.offsets[index] + step, "loss": loss, "stage": index + 1}
        row.update({f"{self.score}/{key}": p for key, p in zip(self.keys, probs.tolist())})
        self.log(row, step=row["step"])

    def stage_done(self, index, stage, image):
        caption = f"stage {index + 1} ({stage.size} px)"
        self.log({f"image/{key}": self._image(img, caption) for key, img in zip(self.keys, image)},
                 step=self.offsets[index] + stage.steps - 1)

    def run_done(self, image, result: RunResult):
        self.log_results(image, result)
        self._log_images(result)

    def log_results(self, image: torch.Tensor, result: RunResult):
        """The per-class table, each class's final image, and the summary (also a sweep's classes gathered:
        pii.run.sweep)."""
        if result.units:
            return self._log_units(image, result)
        judges = result.judge or {}
        columns = ["class_id", "name", "image", "probability", "start_probability", "top1", "top1_name"]
        for name in judges:
            columns += [f"{name}/probability", f"{name}/top1", f"{name}/top5", f"{name}/prediction"]
        table = self.wandb.Table(columns=columns)
        for i, (img, entry) in enumerate(zip(image, result.classes)):
            row = [entry.class_id, entry.name, self._image(img, entry.name), entry.probability,
                   entry.start_probability, entry.top1, entry.top5_classes[0].name]
            for judged in judges.values():
                verdict = judged.classes[i]
                row += [verdict.probability, verdict.top1, verdict.top5, verdict.prediction_name]
            table.add_data(*row)
        final = {f"final/{key}": self._image(img, "final") for key, img in zip(self.keys, image)}
        self.log({"results": table, **final})
        if result.device_settings:  # what precision=auto and the rest became on this machine
            self.run.config.update({"device_settings": result.device_settings}, allow_val_change=True)
        self.summary(summary(result))
        self.summary({f"probability/{key}": e.probability for key, e in zip(self.keys, result.classes)})

    def _log_units(self, image: torch.Tensor, result: RunResult):
        """A unit objective's table: each image's layer, unit, activation at start and end, specificity."""
        table = self.wandb.Table(columns=["layer", "unit", "image", "activation", "start_activation", "top1"])
        for img, entry in zip(image, result.units):
            table.add_data(entry.layer, entry.unit, self._image(img, entry.image), entry.activation,
                           entry.start_activation, entry.top1)
        self.log({"results": table, **{f"final/{key}": self._image(img, "final") for key, img in zip(self.keys, image)}})
        self.summary(summary(result))
        self.summary({f"activation/{key}": e.activation for key, e in zip(self.keys, result.units)})

    def _log_images(self, result: RunResult):
        out_dir = Path(result.config["output_dir"])
        artifact = self.wandb.Artifact(f"inversions-{self.run.id}", type="inversions",
                                       metadata={"model": result.model, "class_ids": self.class_ids})
        for entry in result.classes or result.units or []:
            artifact.add_file(str(out_dir / entry.image))
        artifact.add_file(str(out_dir / METRICS))
        self.run.log_artifact(artifact)

    def _image(self, image: Path | torch.Tensor, caption: str | None):
        """A wandb.Image of an image file, or of a [3, H, W] tensor in [0, 1]."""
        if not isinstance(image, torch.Tensor):
            return self.wandb.Image(str(image), caption=caption)
        from torchvision.transforms.functional import to_pil_image

        return self.wandb.Image(to_pil_image(image.detach().float().clamp(0, 1).cpu()), caption=caption)


def summary(result: RunResult) -> dict:
    """The run's scalars for the W&B runs table: each judge's top-1, top-5 and mean judged
    probability (`judge/<name>/top1`, ...), then the inverted model's own figures."""
    row = {f"judge/{name}/{key}": getattr(judged, key) for name, judged in (result.judge or {}).items()
           for key in ("top1", "top5", "mean_probability")}
    row.update({k: v for k, v in vars(result).items() if isinstance(v, (int, float, str))})
    row.update({f"device/{k}": v for k, v in (result.device_settings or {}).items() if isinstance(v, (int, float, str))})
    return row


def hydra_choices() -> dict:
    """The config-group options this Hydra job was composed from (model, augmentation, schedule,
    loss, ...), so W&B can group runs by the names a user picked; {} outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items() if not k.startswith("hydra/")}


RUN_ARGUMENTS = ("config", "out_dir", "job_type", "job_name", "job_group", "condition")


def builder(logger: DictConfig):
    """The `logger` group's tracker class (`_target_`) with the group's keys bound; checks the group
    without starting anything."""
    return target(logger, "logger", *RUN_ARGUMENTS)


@contextmanager
def opened(cfg: DictConfig, out_dir: Path, enabled: bool = True, **run) -> Iterator[Tracker]:
    """The tracker of `cfg.logger` for one run writing under `out_dir` (`run`: job_type, job_name,
    job_group, condition; see WandbTracker), finished on exit: exit code 0, or 1 when the block
    raises (a failure, Ctrl-C, SIGTERM). `enabled=False` (DDP's other processes): no tracking."""
    tracker = builder(cfg.logger)(config=cfg, out_dir=Path(out_dir), **run) if enabled else Tracker()
    exit_code = 1
    try:
        yield tracker
        exit_code = 0
    finally:
        tracker.finish(exit_code=exit_code)


@contextmanager
def start(cfg: DictConfig, class_ids: list[int], num_classes: int, stages: list[Stage],
          unit_keys: list[str] | None = None) -> Iterator[Tracker]:
    """An inversion's tracker (an Observer), writing under `cfg.output_dir`; see `opened`."""
    with opened(cfg, Path(cfg.output_dir)) as tracker:
        yield tracker.watch_inversion(class_ids, num_classes, stages, unit_keys)
