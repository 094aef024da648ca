"""Starting a run from an earlier one: `resume=<dir>` continues a killed run
at its last completed stage; `init_from=<dir>` starts from another run's
final images instead of noise (PII, then DeepInversion: paper Fig. 9)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from pii import CONF_DIR
from pii.errors import ConfigError, few
from pii.eval import results
from pii.eval.results import METRICS, RunResult
from pii.files import read_png, read_yaml
from pii.models.weights import load_tensors
from pii.run.outputs import CHECKPOINT

log = logging.getLogger(__name__)


# What a resumed run may change: where and how it runs and reports, not what it computes. Any
# other key changed on resume (stages, steps, model, classes, augmentation, loss, seed, ...) would
# make the checkpoint mean something else, so it is refused.
RESUME_MAY_CHANGE = ("device", "precision", "channels_last", "fold_batchnorm", "cudnn_benchmark", "compile", "logger", "verifier")


def resumed_config(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """For `resume=<dir>`: the config that run was started with, writing into <dir>.

    `overrides` (default: this command line's) may change the keys of RESUME_MAY_CHANGE; any
    other key must keep the original run's value (repeating the original command line is fine),
    else ConfigError naming the keys.
    """
    if overrides is None:
        from hydra.core.hydra_config import HydraConfig

        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    run_dir = Path(str(cfg.resume)).expanduser()
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        raise ConfigError(f"resume={run_dir}: there is no .hydra/config.yaml there; "
                          f"pass the output directory of an earlier invert.py run")
    saved_config = read_yaml(saved, "resume")
    if not OmegaConf.is_dict(saved_config):
        raise ConfigError(f"resume={str(saved)!r} is not an invert.py config (not a mapping of keys)")
    if "conditions" in saved_config and "generator" in saved_config:
        raise ConfigError(f"resume={run_dir} is a train_invert.py run; continue it with: python train_invert.py "
                          f"resume=true hydra.run.dir={run_dir}")
    if "class_id" not in saved_config or "model" not in saved_config:
        raise ConfigError(f"resume={str(saved)!r} is not an invert.py config (it has no class_id or model)")
    resumed = with_new_keys(saved_config, cfg)
    saved_overrides = run_dir / ".hydra" / "overrides.yaml"
    original = read_yaml(saved_overrides, "resume") if saved_overrides.is_file() else []
    original = [str(o) for o in original] if OmegaConf.is_list(original) else []
    refused = []
    with open_dict(resumed):
        for override in overrides:
            key = override.split("=", 1)[0].lstrip("+~")
            if key in ("resume", "output_dir") or key.startswith("hydra.") or override in original:
                continue
            value = OmegaConf.select(cfg, key)
            if key.split(".")[0] in RESUME_MAY_CHANGE and value is not None:
                OmegaConf.update(resumed, key, value, merge=False, force_add=True)
            elif value is None or not same_value(key, value, OmegaConf.select(resumed, key)):
                refused.append(override)
        resumed.output_dir, resumed.resume = str(run_dir), str(run_dir)
    if refused:
        raise ConfigError(f"resume={run_dir}: {few(refused)} would change what its checkpoint means; "
                          f"a resumed run may change only {', '.join(RESUME_MAY_CHANGE)} (start a new run instead)")
    return resumed


def with_new_keys(saved: DictConfig, current: DictConfig) -> DictConfig:
    """A run saved by an earlier version of pii lacks the keys added since: they take the current
    values (settings of how to run, such as log_every or augmentation.chunk; never a judge). Where a
    name picked a class (param.name, schedule.optimizer, logger.backend) before `_target_` did, the
    option of that name fills in the class; flat augmentation keys become the transforms they switched on."""
    values = OmegaConf.to_container(current, resolve=False)
    with open_dict(saved):
        if "backend" in (saved.get("logger") or {}):
            saved.logger._target_ = group_option("logger", str(saved.logger.pop("backend")))._target_
        if "param" in saved and "_target_" not in saved.param:
            option = group_option("param", str(saved.param.get("name") or "pixel"))
            kept = {k: v for k, v in saved.param.items() if k in option and v is not None}  # null: another kind's
            saved.param = OmegaConf.merge(option, kept)
        if "optimizer" not in saved and "schedule" in saved:
            saved.optimizer = group_option("optimizer", str(saved.schedule.pop("optimizer", None) or "adam"))
        if "ensemble_size" in (saved.get("augmentation") or {}):
            saved.augmentation = transforms_of_flat_keys(saved.augmentation)
        for key in values:
            if key not in saved:
                saved[key] = values[key]
        for group in ("augmentation", "schedule", "loss", "logger"):
            for key in values.get(group) or {}:
                if group in saved and key not in saved[group]:
                    saved[group][key] = values[group][key]
    return saved


def transforms_of_flat_keys(flat: DictConfig) -> DictConfig:
    """An augmentation group saved with flat keys (jitter, ensemble_size, alpha, ...: before each transform
    was a class of its own key) as the transforms those keys switched on, in the order they were applied."""
    a = OmegaConf.to_container(flat, resolve=True)

    def on(cls: str, **arguments) -> dict:
        return {"_target_": f"pii.core.augment.{cls}", **arguments}

    crops, scale, degrees = a.get("crops"), a.get("scale"), a.get("degrees", 0)
    return OmegaConf.create({
        **({"chunk": a["chunk"]} if "chunk" in a else {}),
        "pad": on("Pad", pixels=a["pad"], value=0.5) if a.get("pad") else None,
        "shift": on("Shift", pixels=a["shift"]) if a.get("shift") else None,
        "jitter": on("Jitter", max_shift=a["jitter"]) if a.get("jitter") else None,
        "ensemble": on("Crops", size=a["ensemble_size"], box=crops, centre_std=a.get("crop_centre_std", 0.15))
        if crops else on("Ensemble", size=a["ensemble_size"]),
        "scale_rotate": on("ScaleRotate", scale=scale or [1.0, 1.0], degrees=degrees) if scale or degrees else None,
        "flip": on("Flip", p=0.5) if a.get("flip") else None,
        "color_shift": on("ColorShift", alpha=a["alpha"], beta=a["beta"])
        if a.get("color_shift") and (a["alpha"] > 0 or a["beta"] > 0) else None,
        "noise": on("Noise", std=a["noise"]) if a.get("noise") else None})


def group_option(group: str, name: str) -> DictConfig:
    """The values of conf/<group>/<name>.yaml (without its defaults list: the schema it names)."""
    path = Path(CONF_DIR) / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"the run to resume used {group} {name!r}, which this version has no {path.name} for")
    option = OmegaConf.load(path)
    option.pop("defaults", None)
    return option


def plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def same_value(key: str, new, old) -> bool:
    """Whether an override repeats the original run's value: `class_id=[980]` is `class_id=980`."""
    new, old = plain(new), plain(old)
    if key == "class_id":
        new, old = ([v] if not isinstance(v, list) else v for v in (new, old))
    return new == old


def finished_result(run_dir: Path) -> RunResult | None:
    """A finished run's result (metrics.json is written last), or None while it is unfinished."""
    path = Path(run_dir) / METRICS
    return results.read(path) if path.is_file() else None


def load_checkpoint(run_dir: Path, sizes: list[int] | None = None, class_ids: list[int] | None = None) -> dict | None:
    """The checkpoint of the last completed stage (pii.run.outputs.Saver), or None; each entry checked
    (its type, its range), whoever wrote the file: with the schedule's stage `sizes` and the run's
    `class_ids`, that it is a stage of this schedule, at its size, of these classes."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    checkpoint = load_tensors(path, "resume checkpoint")
    if not isinstance(checkpoint, dict) or not {"stage", "image", "class_ids", "rng"} <= set(checkpoint):
        raise ConfigError(f"resume checkpoint {str(path)!r} is not one invert.py wrote (no stage, image, class_ids, rng)")
    bad = checkpoint_problem(checkpoint, sizes)
    if bad:
        raise ConfigError(f"resume checkpoint {str(path)!r} is damaged: {bad}; start a new run, or resume a copy "
                          f"of the run whose checkpoint is whole")
    if class_ids is not None and list(checkpoint["class_ids"]) != list(class_ids):
        raise ConfigError(f"resume: the checkpoint {str(path)!r} holds classes {few(checkpoint['class_ids'])}, "
                          f"not the run's {few(class_ids)}")
    return checkpoint


def checkpoint_problem(checkpoint: dict, sizes: list[int] | None) -> str | None:
    """What is wrong with a checkpoint's entries (pii.run.outputs.Saver writes them), or None."""

    def integer(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    stage, image, rng, seconds = checkpoint["stage"], checkpoint["image"], checkpoint["rng"], checkpoint.get("seconds")
    if not integer(stage) or stage < 0 or (sizes is not None and stage >= len(sizes)):
        return (f"its stage is {stage!r}, not a stage index 0..{len(sizes) - 1} of this schedule's {len(sizes)}"
                if sizes is not None else f"its stage is {stage!r}, not a stage index >= 0")
    ids = checkpoint["class_ids"]
    if not isinstance(ids, (list, tuple)) or not ids or not all(integer(c) for c in ids):
        return f"its class_ids are {type(ids).__name__} {str(ids)[:40]}, not a list of class ids"
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or len(image) != len(ids) or not image.is_floating_point():
        return "its image is not one float image (classes, 3, H, W) per class id"
    if sizes is not None and tuple(image.shape[1:]) != (3, sizes[stage], sizes[stage]):
        return f"its image is {list(image.shape[1:])}, not stage {stage + 1}'s 3 x {sizes[stage]} x {sizes[stage]} px"
    if not image.isfinite().all():
        return "its image holds nan or inf"
    cpu_state = torch.get_rng_state()
    if not isinstance(rng, torch.Tensor) or rng.dtype != cpu_state.dtype or rng.shape != cpu_state.shape:
        return (f"its rng is {type(rng).__name__}{f' {rng.dtype} {list(rng.shape)}' if isinstance(rng, torch.Tensor) else ''},"
                f" not the random state torch saves ({cpu_state.dtype} [{len(cpu_state)}])")
    cuda = checkpoint.get("cuda_rng", [])
    if not isinstance(cuda, (list, tuple)) or not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda):
        return "its cuda_rng is not a list of CUDA random states"
    param = checkpoint.get("param", {})
    if not isinstance(param, dict) or not all(isinstance(t, torch.Tensor) and t.is_floating_point()
                                              and bool(t.isfinite().all()) for t in param.values()):
        return "its param is not a state of finite float tensors"
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not math.isfinite(seconds) or seconds < 0):
        return f"its seconds are {seconds!r}, not a time >= 0"
    return None


def load_images(run_dir: Path, class_ids: list[int]) -> torch.Tensor:
    """A finished run's per-class PNGs, in the order of `class_ids`, as [0, 1] floats."""
    run_dir = Path(str(run_dir)).expanduser()
    files = {e.class_id: run_dir / e.image for e in results.read(run_dir / METRICS, "init_from").classes}
    missing = [c for c in class_ids if c not in files]
    if missing:
        raise ConfigError(f"init_from={run_dir} has no image for class {few(missing)}; it has classes {few(sorted(files))}")
    return torch.stack([read_png(files[c]) for c in class_ids])


def check_files(cfg: DictConfig) -> None:
    """Read what `resume=` or `init_from=` names, so that a damaged file fails before a run starts."""
    from pii.models.classes import job_classes

    if cfg.get("resume"):
        from pii.run import build

        load_checkpoint(Path(str(cfg.resume)).expanduser(), [stage.size for stage in build.stages(cfg)],
                        job_classes(cfg.class_id, int(cfg.model.num_classes), cfg.get("classes_per_job"),
                                    cfg.get("class_chunk")))
    if cfg.get("init_from"):
        load_images(cfg.init_from, job_classes(cfg.class_id, int(cfg.model.num_classes), cfg.get("classes_per_job"),
                                               cfg.get("class_chunk")))


def starting_point(cfg: DictConfig, class_ids: list[int], sizes: list[int],
                   device: torch.device) -> tuple[torch.Tensor | dict | None, int, float | None]:
    """(start, first stage, seconds) for pii.core.inversion.invert: (None, 0, 0.0) starts from noise.
    `start` is a checkpoint's param state (a dict, pii.core.param.Param.load_state_dict) or images;
    `seconds` the inversion time of the stages already done (None: a checkpoint that did not keep it).
    `sizes`: the run's stage sizes, which a checkpoint must have been made at.

    The inversion's random numbers are seeded afresh at each stage (pii.core.draws), so the resumed
    run draws what the uninterrupted run drew; the global random state saved with the checkpoint is
    restored as well.
    """
    if cfg.get("resume"):
        checkpoint = load_checkpoint(Path(cfg.output_dir), sizes, class_ids)
        if checkpoint is None:
            log.warning("resume: no finished stage in %s; starting from the first stage", cfg.output_dir)
            return None, 0, 0.0
        first = int(checkpoint["stage"]) + 1
        seconds = checkpoint.get("seconds")
        if seconds is None:
            log.warning("resume: %s does not record the time of its first %d stages (an older checkpoint); "
                        "metrics.json's seconds will be null", cfg.output_dir, first)
        torch.set_rng_state(checkpoint["rng"])
        if "cuda_rng" in checkpoint and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
        log.info("resuming %s after stage %d of %d", cfg.output_dir, first, len(sizes))
        return checkpoint.get("param", checkpoint["image"].to(device)), first, seconds
    if cfg.get("init_from"):
        log.info("starting from the images of %s", cfg.init_from)
        return load_images(cfg.init_from, class_ids).to(device), 0, 0.0
    return None, 0, 0.0
