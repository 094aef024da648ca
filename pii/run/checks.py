"""The checks of one invert.py job, in one function: the entry points' preflight calls it once per
job, pii.run.runner.run when it is called directly."""

from __future__ import annotations

from omegaconf import DictConfig

from pii.models.photos import PHOTOS
from pii.run.config import check_invert, check_stages


def check_invert_job(cfg: DictConfig, overrides: list[str] | None = None) -> DictConfig:
    """Every check of one invert.py job, and the config it runs: with resume=, the run's own
    (pii.run.resume.resumed_config; `overrides` None: the command line's). The entry points' preflight
    (pii.run.cli.preflight) calls it once per job, pii.run.runner.run when called directly.
    Types are the schema's by now: ranges and choices; then what needs timm but no model (the stage
    sizes); then every file it names (resume='s checkpoint, init_from='s images, weights of the model
    and of each judge, param.spectrum), read, so that a bad one fails before Hydra makes the run's
    directory. A command line with a typo fails before torch is imported."""
    if cfg.get("resume"):
        from pii.run.resume import resumed_config

        cfg = resumed_config(cfg, overrides)
    check_invert(cfg)
    from pii.models.device import available_device
    from pii.run import build

    check_stages(cfg, [stage.size for stage in build.stages(cfg)])
    available_device(str(cfg.device))
    if cfg.get("resume") or cfg.get("init_from"):
        from pii.run.resume import check_files

        check_files(cfg)
    from pii.models.weights import check_weights

    check_weights(cfg.model.get("weights"), "model.weights")
    for name, judge in (cfg.get("verifier") or {}).items():
        check_weights(judge.get("weights"), f"verifier.{name}.weights")
    if cfg.get("param") is not None and cfg.param.get("spectrum") not in (None, "", PHOTOS):
        from pii.core.param import load_spectrum

        load_spectrum(str(cfg.param.spectrum))
    from pii.run import tracking

    tracking.builder(cfg.logger)
    return cfg
