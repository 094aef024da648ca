"""One `invert.py` run: config in, images and metrics out."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from pii.core.observers import Observer, Observers
from pii.eval import judge as judge_lib
from pii.eval import results, units
from pii.eval.results import METRICS, RunResult, StageTime
from pii.models.classes import class_key
from pii.run import build, resume, tracking
from pii.run.checks import check_invert_job
from pii.run.outputs import Saver, save_images

log = logging.getLogger(__name__)


class ProgressBar(Observer):
    """A tqdm bar per stage with the loss and the mean target probability, or activation (`score`), as
    often as the loop reports."""

    def __init__(self, num_stages: int, score: str = "p_target"):
        from tqdm.auto import tqdm

        self.tqdm, self.num_stages, self.score, self.bar = tqdm, num_stages, score, None

    def stage_started(self, index, stage, image):
        self.bar = self.tqdm(total=stage.steps, desc=f"stage {index + 1}/{self.num_stages} {stage.size}px",
                             leave=True, dynamic_ncols=True)

    def step_done(self, index, step, loss, probs):
        self.bar.set_postfix({"loss": f"{loss:.3f}", self.score: f"{probs.mean().item():.3f}"}, refresh=False)
        self.bar.update(step + 1 - self.bar.n)

    def stage_done(self, index, stage, image):
        self.bar.update(stage.steps - self.bar.n)
        self.bar.close()


class StageTimer(Observer):
    """Wall seconds of each stage, and of its first step (where compiling and cudnn's autotuning
    for the stage's new size happen): the loop reads the loss back at step 0, so that time is real."""

    def __init__(self):
        self.stages: list[StageTime] = []

    def stage_started(self, index, stage, image):
        self.start = time.perf_counter()
        self.stages.append(StageTime(stage.size, stage.steps))

    def step_done(self, index, step, loss, probs):
        if step == 0:
            self.stages[-1].first_step_seconds = time.perf_counter() - self.start

    def stage_done(self, index, stage, image):
        self.stages[-1].seconds = time.perf_counter() - self.start


def run(cfg: DictConfig) -> RunResult:
    """Invert `cfg.class_id` (or its chunk `class_chunk`) of `cfg.model`; write outputs to `cfg.output_dir`; return what metrics.json holds.

    `resume=<dir>` continues that run at its last completed stage; `init_from=<dir>` starts from its images.
    `cfg` is checked first (pii.run.checks.check_invert_job), before anything is written.
    """
    return run_checked(check_invert_job(cfg))


def run_checked(cfg: DictConfig) -> RunResult:
    """`run` of a config that pii.run.checks.check_invert_job returned (the entry points' preflight checks
    each job once, pii.run.cli.Checked)."""
    if cfg.get("resume"):
        finished = resume.finished_result(Path(cfg.output_dir))
        if finished is not None:  # resuming a finished run changes nothing, and says so
            log.info("%s is a finished run (metrics.json is there); nothing to resume", cfg.output_dir)
            return finished
    torch.manual_seed(int(cfg.seed))
    pieces = build.pieces(cfg)  # the views' chunk planned to fit the memory, before anything is written
    log.info(pieces.settings.line())
    # the images' targets: classes, or a unit objective's units (pii.run.build.targets)
    class_ids, unit_run, device = pieces.targets, pieces.unit_run, pieces.device
    classifier, stages = pieces.classifier, pieces.stages
    # the judges load before the inversion, so one that cannot load costs no inversion; their random
    # initialisation (before their weights load) leaves what the inversion draws as it was
    with torch.random.fork_rng(devices=[]):
        judges = {} if unit_run else judge_lib.build_judges(cfg.get("verifier"), device, classifier.num_classes)
    if unit_run and cfg.get("verifier"):
        log.info("the judges (verifier) judge classes: skipped for a unit objective, whose images are measured by "
                 "their activation and specificity (pii.eval.units)")
    loss_fn, photo = pieces.loss, pieces.photo
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    log.info("inverting %s classes %s on %s (%s); stages %s x %d steps; outputs in %s", classifier.name, class_ids,
             device, "compiled" if pieces.compiled else "eager", [s.size for s in stages], stages[0].steps, out_dir)

    noise = torch.rand(len(class_ids), 3, classifier.input_size, classifier.input_size, device=device)
    if photo is not None:  # feature accentuation: the images start from the photo, the start's activation there
        noise = photo.expand(len(class_ids), -1, -1, -1)
    start = units.activations(loss_fn, classifier, noise, class_ids) if unit_run else \
        [entry.probability for entry in judge_lib.class_report(classifier, noise, class_ids)]
    param = pieces.param(len(class_ids))
    start_from, first_stage, seconds_before = resume.starting_point(cfg, class_ids, [s.size for s in stages], device)
    if isinstance(start_from, dict):  # a checkpoint's param state: resumed exactly
        param.load_state_dict(start_from)
    elif start_from is not None:  # images (init_from, or an older pixel checkpoint)
        param.encode(start_from)
    elif photo is not None:
        param.encode(noise)
    keys = [name.removesuffix(".png") for name in units.image_names(loss_fn.reported.layer, class_ids)] \
        if unit_run else None
    with tracking.start(cfg, class_ids, classifier.num_classes, stages, keys) as tracker:
        timer = StageTimer()
        started = time.perf_counter()
        # the whole run's inversion time so far, carried in each checkpoint (None: a checkpoint that lacks it)
        elapsed = (lambda: None) if seconds_before is None else (lambda: seconds_before + time.perf_counter() - started)
        observers = Observers([ProgressBar(len(stages), "activation" if unit_run else "p_target"), timer, Saver(out_dir, class_ids, param, elapsed), tracker])
        image = pieces.invert(class_ids, observers, param, first_stage)
        seconds = elapsed()
        result = _result(pieces, image, start, seconds)
        result.device_settings = asdict(pieces.settings)
        result.first_stage = first_stage + 1
        result.stage_seconds = timer.stages
        save_images(out_dir, image, result)  # before judging: the images are kept whatever judging meets
        result.judge = judge_lib.judge_run(judges, image, class_ids,
                                           slopes=[entry.spectral_slope for entry in result.classes])
        # metrics.json says the run is finished (resume= and a resumed sweep skip it): written once, last
        results.write(out_dir / METRICS, result)
        observers.run_done(image, result)
    if seconds is None:
        log.info("done; the time of the stages before the resume is unknown (an older checkpoint); images in %s", out_dir)
    else:
        log.info("done in %.1f s (%.1f s per class); images in %s", seconds, seconds / len(class_ids), out_dir)
    return result


def _result(pieces: build.Pieces, image, start, seconds) -> RunResult:
    """The run's metrics; for units, its images' activations and specificity (against the real
    images too, where the run names them) instead of the classifier's probabilities."""
    cfg, classifier, class_ids, stages = pieces.cfg, pieces.classifier, pieces.targets, pieces.stages
    objective = pieces.loss if pieces.unit_run else None
    report = [] if objective else judge_lib.class_report(classifier, image, class_ids)
    names = results.image_names([class_key(entry.class_id, classifier.num_classes) for entry in report])
    for entry, p0, img, name in zip(report, start, image, names):
        entry.start_probability = p0
        entry.image = name
        entry.spectral_slope = judge_lib.spectral_slope(img)
    unit_report = units.unit_report(objective, classifier, image, class_ids, start, int(cfg.seed), pieces.real) \
        if objective else None
    entries = report or unit_report
    result = RunResult(
        model=classifier.name,
        device=str(pieces.device),
        seconds=seconds,
        seconds_per_class=None if seconds is None else seconds / len(class_ids),
        steps=sum(s.steps for s in stages),
        stage_sizes=[s.size for s in stages],
        ensemble_size=pieces.augment.copies,
        param=str(cfg.param.name),
        spectral_slope=sum(entry.spectral_slope for entry in entries) / len(entries),
        mean_probability=sum(e.probability for e in report) / len(report) if report else math.nan,
        top1_rate=sum(e.top1 for e in report) / len(report) if report else math.nan,
        classes=report,
        config=OmegaConf.to_container(cfg, resolve=True),
        units=unit_report,
    )
    if unit_report:
        tops = [u.top1 for u in unit_report if u.top1 is not None]
        result.specificity = sum(tops) / len(tops) if tops else None
        if len(set(class_ids)) < len(class_ids):  # several images of a unit: how far apart they are
            result.diversity = judge_lib.diversity(judge_lib.features(classifier, image), class_ids)
        for entry in unit_report:
            log.info("%s unit %d: activation %.3f (from %.3f)%s, the most activated of its layer: %s -> %s", entry.layer,
                     entry.unit, entry.activation, entry.start_activation,
                     "" if entry.vs_real is None else f", {entry.vs_real:.2f} x its largest on real images",
                     entry.top1, entry.image)
    for entry in report:
        log.info("class %d %s: p=%.3f (from %.4f), top-1 %s, spectral slope %.2f -> %s", entry.class_id,
                 entry.name, entry.probability, entry.start_probability, entry.top5_classes[0].name,
                 entry.spectral_slope, entry.image)
    return result
