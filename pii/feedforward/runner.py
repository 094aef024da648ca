"""One `train_invert.py` run: config in, generators, eval.json and grids out.

mode=train (default): train one generator per entry of `conditions` (the
logit-conditioned model and, by default, the one-hot baseline with the same
code and budget), evaluate each on the held-out split, write the analyses.
mode=analyse: redo the evaluation and analyses from the checkpoints of an
earlier run (`run_dir=...`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from contextlib import ExitStack
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from pii.errors import ConfigError, few
from pii.feedforward import analyses, losses
from pii.feedforward import classifier as classifier_lib
from pii.feedforward import data as data_lib
from pii.feedforward import evaluate as eval_lib
from pii.feedforward import generator as g_lib
from pii.feedforward.config import TRAIN_INVERT_CONF_DIR, check_train_invert
from pii.feedforward.train import (
    CHECKPOINT,
    CHECKPOINT_KEYS,
    Dist,
    load_checkpoint,
    load_module,
    resumable_step,
    train,
)
from pii.files import write_json
from pii.models.device import resolve_device
from pii.models.weights import check_weights
from pii.run import tracking
from pii.run.config import target
from pii.run.outputs import METRICS, write_metrics

log = logging.getLogger(__name__)

EVAL = "eval.json"


def setup_dist(device_name: str) -> Dist:
    """torchrun sets WORLD_SIZE/RANK/LOCAL_RANK: join the group (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name, cudnn_benchmark=True)  # one input shape for the whole training
    if world == 1:
        return Dist(0, 1, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, device)


def generator(cfg: DictConfig):
    """The `generator` group's class with its keys bound; called with num_classes, condition, temperature."""
    return target(cfg.generator, "generator", "num_classes", "condition", "temperature", root=TRAIN_INVERT_CONF_DIR)


def discriminator(cfg: DictConfig):
    """The `discriminator` group's class with its keys bound; called with cond_dim and the generator's resolution."""
    return target(cfg.discriminator, "discriminator", "cond_dim", "resolution", root=TRAIN_INVERT_CONF_DIR)


def check(cfg: DictConfig) -> None:
    """Input checks that need no data: fail before anything slow happens."""
    data_lib.builder(cfg.data)
    classifier_lib.builder(cfg.classifier)
    tracking.builder(cfg.logger)
    g_lib.depth_for(int(cfg.generator.resolution), int(cfg.generator.base))
    g_lib.depth_for(int(cfg.generator.resolution), int(cfg.discriminator.base))
    generator(cfg), discriminator(cfg)  # their _target_ loads and takes their keys
    for c in cfg.conditions:
        if c not in g_lib.CONDITIONS:
            raise ConfigError(f"conditions has {c!r}; each must be one of {', '.join(g_lib.CONDITIONS)}")
    if cfg.mode not in ("train", "analyse"):
        raise ConfigError(f"mode={cfg.mode!r} unknown; use mode=train or mode=analyse")
    unknown = set(cfg.analyses) - set(analyses.ANALYSES)
    if unknown:
        raise ConfigError(f"analyses has {sorted(unknown)}; known: {', '.join(analyses.ANALYSES)}")


def check_files(cfg: DictConfig, out_dir: Path) -> None:
    """Read every file the run starts from, before it starts (a named path is read, never made in its
    place): classifier.checkpoint, mode=analyse's run_dir, and with resume=true the checkpoints in
    `out_dir` (at least one of them: else there is nothing to resume)."""
    classifier_lib.check_named_checkpoint(cfg.classifier)
    if cfg.classifier.get("checkpoint"):
        check_weights(str(cfg.classifier.checkpoint), "classifier.checkpoint")
    if cfg.mode == "analyse":
        if not cfg.get("run_dir"):
            raise ConfigError("mode=analyse needs run_dir=<an earlier train_invert output dir>")
        for condition in cfg.conditions:
            read_checkpoint(Path(str(cfg.run_dir)).expanduser() / condition / CHECKPOINT, "run_dir")
    elif cfg.resume:
        check_unchanged(cfg, out_dir)
        found = [out_dir / c / CHECKPOINT for c in cfg.conditions if (out_dir / c / CHECKPOINT).is_file()]
        if not found:
            raise ConfigError(f"resume=true: {str(out_dir)!r} holds no generator checkpoint "
                              f"({few(f'{c}/{CHECKPOINT}' for c in cfg.conditions)}); pass the directory of the run "
                              f"to continue as hydra.run.dir=..., or drop resume=true to start a new run")
        for path in found:
            resumable_step(read_checkpoint(path, "resume"), path, int(cfg.schedule.steps))


# What `resume=true` may change: how the run goes and reports, not what it trains (as invert.py's
# pii.run.resume.RESUME_MAY_CHANGE); schedule.steps may grow (pii.feedforward.train.resumable_step).
RESUME_MAY_CHANGE = ("device", "num_threads", "channels_last", "logger", "resume", "output_dir", "hydra",
                     "eval_batch_size", "grid_images", "analyses", "schedule.steps", "schedule.checkpoint_every",
                     "schedule.sample_every", "schedule.log_every", "schedule.workers", "schedule.precision",
                     "schedule.compile")


def check_unchanged(cfg: DictConfig, out_dir: Path) -> None:
    """resume=true continues the run in `out_dir` as it was started (its .hydra/config.yaml): a key
    outside RESUME_MAY_CHANGE with another value would make metrics.json claim it for every step,
    so it is refused, naming the keys; a directory of an invert.py run is named as such."""
    from pii.files import read_yaml

    saved_path = out_dir / ".hydra" / "config.yaml"
    if not saved_path.is_file():
        return  # no config: the checkpoints are what is checked (check_files)
    saved = read_yaml(saved_path, "resume")
    if not OmegaConf.is_dict(saved):
        raise ConfigError(f"resume=true: {str(saved_path)!r} is not a train_invert.py config (not a mapping of keys)")
    if "class_id" in saved and "conditions" not in saved:
        raise ConfigError(f"resume=true: {out_dir} is an invert.py run; continue it with: python invert.py resume={out_dir}")
    old = flat(OmegaConf.to_container(saved, resolve=False))
    new = flat(OmegaConf.to_container(cfg, resolve=False))
    allowed = tuple(RESUME_MAY_CHANGE)
    changed = [f"{key}={new[key]} (the run has {old[key]})" for key in sorted(set(old) & set(new))
               if new[key] != old[key] and not any(key == a or key.startswith(f"{a}.") for a in allowed)]
    if changed:
        raise ConfigError(f"resume=true: {few(changed)} would change what its checkpoints mean; a resumed run may "
                          f"change only {', '.join(a for a in allowed if a not in ('resume', 'output_dir', 'hydra'))} "
                          f"(start a new run instead)")


def flat(values: dict, prefix: str = "") -> dict:
    """{'a.b': value} of a nested dict (lists kept whole)."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_checkpoint(path: Path, key: str) -> dict:
    """A generator checkpoint train_invert wrote (pii.feedforward.train); ConfigError naming `key` if it is
    missing, damaged or holds something else."""
    if not path.is_file():
        raise ConfigError(f"{key}: no checkpoint {str(path)!r}; pass the output directory of a train_invert run")
    state = load_checkpoint(path)
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"{key}: {str(path)!r} is not a train_invert checkpoint (it has no {few(missing)})")
    return state


def finished(cfg: DictConfig, out_dir: Path) -> dict | None:
    """With resume=true, the metrics of a run in `out_dir` that has trained schedule.steps already, else None."""
    done = Path(out_dir) / METRICS
    if not (cfg.resume and cfg.mode == "train" and done.is_file()):
        return None
    try:
        metrics = json.loads(done.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"resume: {str(done)!r} is damaged ({type(err).__name__}: {str(err)[:80]})") from None
    steps = metrics.get("steps", 0) if isinstance(metrics, dict) else 0
    return metrics if isinstance(steps, int) and steps >= int(cfg.schedule.steps) else None


def train_invert(cfg: DictConfig, checked: bool = False) -> dict:
    """Train (or, with mode=analyse, reload) the generators; evaluate; return the metrics. `checked`:
    the entry point's preflight checked `cfg` (pii.feedforward.cli.check_job); else it is checked here."""
    if not checked:
        check_train_invert(cfg)
        check(cfg)
    if (metrics := finished(cfg, Path(cfg.output_dir))) is not None:  # nothing left to train: leave the run as it is
        log.info("%s is a finished run (%d steps); nothing to resume", cfg.output_dir, metrics["steps"])
        return metrics
    if not checked:
        check_files(cfg, Path(cfg.output_dir))
    threads = torch.get_num_threads()
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    dinfo = setup_dist(str(cfg.device))
    try:
        return _run(cfg, dinfo)
    finally:
        torch.set_num_threads(threads)  # the caller's setting, not ours, outlives the run
        if dinfo.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _run(cfg: DictConfig, dinfo: Dist) -> dict:
    started = time.perf_counter()
    torch.manual_seed(int(cfg.seed))
    res = int(cfg.generator.resolution)
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = data_lib.build(cfg.data, res)
    classifier = classifier_lib.build(cfg.classifier, cfg.get("model"), data, res, dinfo.device,
                                      is_main=dinfo.is_main, barrier=dinfo.barrier, data_cfg=cfg.data,
                                      robust_cfg=cfg.get("robust"))
    g_loss = losses.build(cfg.loss, classifier)
    x_test, y_test = data_lib.load_all(data.test, workers=int(cfg.schedule.workers))
    # Training-set logit statistics: G standardises its input with them; the edits scale by them.
    x_fit, _ = data_lib.load_all(data_lib.limit(data.train, cfg.fit_images, int(cfg.seed)),
                                 workers=int(cfg.schedule.workers))
    with torch.no_grad():
        train_logits = torch.cat([classifier(xb.to(dinfo.device)).cpu() for xb in x_fit.split(256)])
        # the sample grid's conditions: the same held-out images for every G
        grid_logits = classifier(x_test[: int(cfg.grid_images)].to(dinfo.device))
    run_dir = Path(str(cfg.run_dir)).expanduser() if cfg.mode == "analyse" else out_dir

    log.info("train_invert: %s data (%d train, %d held-out, %d classes) at %d px, classifier %s, conditions %s, "
             "%d steps, outputs in %s", cfg.data.name, len(data.train), len(data.test), data.num_classes, res,
             classifier.name, list(cfg.conditions), int(cfg.schedule.steps), out_dir)
    generators, results, history, trackers = {}, {}, {}, {}
    # one tracked run per condition, each finished on the way out (exit code 1 if anything fails)
    with ExitStack() as finishing:
        for condition in cfg.conditions:
            G = generator(cfg)(num_classes=data.num_classes, condition=condition, temperature=float(cfg.temperature))
            G.condition.fit(train_logits)
            sub = run_dir / condition
            tracker = trackers[condition] = finishing.enter_context(tracking.opened(
                cfg, sub, enabled=dinfo.is_main, job_type="train_invert", condition=condition, **job_identity(sub)))
            if cfg.mode == "analyse":
                load_module(G, read_checkpoint(sub / CHECKPOINT, "run_dir")["G_ema"], sub / CHECKPOINT, "run_dir")
                G_ema = G.to(dinfo.device).eval()
            else:
                D = discriminator(cfg)(cond_dim=data.num_classes, resolution=res)
                if cfg.channels_last:  # faster convolutions on CPU
                    G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
                G_ema, history[condition] = train(
                    G, D, classifier, data.train, g_loss, cfg.schedule, sub, tracker=tracker, dist_info=dinfo,
                    seed=int(cfg.seed), resume=bool(cfg.resume), tag=condition,
                    sample_logits=grid_logits, workers=int(cfg.schedule.workers))
            generators[condition] = G_ema
            if dinfo.is_main:
                results[condition] = eval_lib.evaluate(G_ema, classifier, x_test, y_test, int(cfg.eval_batch_size))
                tracker.log({f"eval/{k}": v for k, v in results[condition].items()})
                tracker.summary({f"eval/{k}": v for k, v in results[condition].items()})
        if not dinfo.is_main:
            return {}
        write_json(out_dir / EVAL, results)
        grids = write_analyses(cfg, generators, classifier, x_test, y_test, train_logits.std(0), out_dir)
        for tracker in trackers.values():  # the analyses compare every generator: in each run
            for name, path in grids.items():
                tracker.image(f"analyses/{name}", path)

    seconds = time.perf_counter() - started
    table = eval_lib.table(results)
    print(f"\nfeedforward inversion, held-out {cfg.data.name} ({len(x_test)} images), {seconds:.0f} s\n{table}")
    log.info("evaluation (%s):\n%s", out_dir / EVAL, table)
    metrics = {"eval": results, "seconds": seconds, "steps": int(cfg.schedule.steps), "world_size": dinfo.world,
               "classifier": classifier.name, "num_test": len(x_test), "grids": {k: str(v) for k, v in grids.items()},
               "final_losses": {c: h[-1] for c, h in history.items() if h},
               "config": OmegaConf.to_container(cfg, resolve=True)}
    write_metrics(out_dir, metrics)
    return metrics


def job_identity(condition_dir: Path) -> dict:
    """The W&B run's fallback name and group (logger.run_name / logger.group win): in a multirun the
    job's own name, grouped as <sweep>/<job>; else the train_invert output dir's name for both."""
    group, name = tracking.hydra_identity()
    job = condition_dir.parent.name
    return {"job_name": name or job, "job_group": f"{group}/{name}" if group else job}


def write_analyses(cfg: DictConfig, generators: dict, classifier, x: torch.Tensor, y: torch.Tensor,
                   logit_std: torch.Tensor, out_dir: Path) -> dict[str, Path]:
    n = int(cfg.grid_images)
    grids: dict[str, Path] = {}
    if "reconstructions" in cfg.analyses:
        grids["reconstructions"] = analyses.reconstructions(generators, classifier, x[:n], out_dir / "reconstructions.png")
    for name, G in generators.items():
        if "noise" in cfg.analyses:
            grids[f"{name}_noise"] = analyses.noise(G, classifier, x[: min(n, 4)], out_dir / f"{name}_noise.png")
        if "edits" in cfg.analyses:
            grids[f"{name}_edits"] = analyses.edits(G, classifier, x[: min(n, 4)], logit_std, out_dir / f"{name}_edits.png")
        if "misclassified" in cfg.analyses:
            path, info = analyses.misclassified(G, classifier, x, y, out_dir / f"{name}_misclassified.png", n)
            if path:
                grids[f"{name}_misclassified"] = path
                log.info("%s misclassified held-out images (label -> predicted -> prediction on reconstruction): %s",
                         name, ", ".join(f"{i['label']}->{i['predicted']}->{i['reconstruction_predicted']}" for i in info))
    log.info("grids: %s", ", ".join(str(p) for p in grids.values()))
    return grids
