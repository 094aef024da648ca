"""The training loop: alternating hinge-loss D and G steps, EMA of G (timm's ModelEmaV3),
checkpoints every N steps (plain tensors, loaded with weights_only=True),
resume, sample grids, a progress bar, and DistributedDataParallel.

Batches and noise are pure functions of (seed, step), so a run resumed from a
checkpoint at step s continues exactly the sequence a clean run would have.

A step never waits for the GPU: the losses stay on the device and are fetched
once per `log_every` steps; noise is drawn on the device. Options of the
`schedule` group: `precision` (fp32 | bf16 autocast of G and D), `compile`
(torch.compile of G and D), `sync_batchnorm` (G's batch norms synchronised
across torchrun processes; CUDA only).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
import torch.distributed as dist
from omegaconf import DictConfig
from timm.utils import ModelEmaV3
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.utils.data import DataLoader, Dataset

from pii.core.precision import PRECISIONS
from pii.errors import ConfigError
from pii.feedforward.data import StepBatches
from pii.feedforward.losses import GeneratorLoss, hinge_d, hinge_g
from pii.models.weights import load_tensors, mismatch
from pii.run.outputs import save_checkpoint, save_grid
from pii.run.tracking import Tracker

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"


@dataclass
class Dist:
    """This process's place in a (possibly single-process) job."""
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def ema_update(ema: ModelEmaV3, model: nn.Module, step: int, start: int) -> None:
    """Before step `start` the EMA is a copy of the model; from then on, timm's update with the EMA's
    decay: parameters averaged, buffers (BN statistics, spectral-norm vectors) copied."""
    if step < start:
        ema.set(model)
    else:
        ema.update(model)


CHECKPOINT_KEYS = ("step", "G", "D", "G_ema", "opt_g", "opt_d")  # what `train` saves


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """A checkpoint of plain tensors and numbers; anything that would run code when unpickled is refused."""
    return load_tensors(path, "train_invert checkpoint", map_location)


def resumable_step(state: dict, path: Path, steps: int) -> int:
    """The step a checkpoint continues from; ConfigError if it is past `steps` (continuing would train
    nothing and report no losses)."""
    start = int(state["step"])
    if start > steps:
        raise ConfigError(f"resume: {str(path)!r} is at step {start}, past schedule.steps={steps}; "
                          f"resume with schedule.steps >= {start}")
    return start


def load_module(module: nn.Module, state: dict, path: Path, key: str) -> None:
    """`state` into `module` (G, D or the EMA of G); ConfigError naming the first few keys that do not fit."""
    misfit = mismatch(module, state)
    if misfit:
        raise ConfigError(f"{key}: {str(path)!r} does not fit {type(module).__name__} of these settings ({misfit}); "
                          f"use the generator and discriminator settings the run was trained with")
    module.load_state_dict(state)


def noise(step: int, n: int, z_dim: int, seed: int, rank: int, which: int,
          device: torch.device | str = "cpu") -> torch.Tensor:
    """z for (seed, step, rank, which), drawn by a generator of `device` itself: no host-to-device copy,
    and still a pure function of its arguments (a CPU and a CUDA run draw different, equally fixed, numbers)."""
    g = torch.Generator(device).manual_seed(((seed * 1_000_003 + step) * 64 + rank) * 2 + which)
    return torch.randn(n, z_dim, generator=g, device=device)


def check_finite(records: list[dict], steps: int, tag: str, saved: int) -> None:
    """Stop at the first step whose losses are nan or inf, naming the step and the losses (the
    checkpoint stays the last finite one)."""
    for record in records:
        bad = [name for name, value in record.items() if name != "step" and not math.isfinite(value)]
        if bad:
            raise ConfigError(f"{tag or 'generator'}: {', '.join(bad)} became nan or inf at step {record['step'] + 1} "
                              f"of {steps}: the training diverged; lower schedule.lr_g and schedule.lr_d "
                              f"(the checkpoint keeps step {saved})")


def sync_batchnorm(G: nn.Module, D: nn.Module, dist_info: Dist) -> tuple[nn.Module, nn.Module]:
    """Batch statistics over all processes' images, not each process's share of the batch.

    convert_sync_batchnorm replaces every nn.BatchNorm* module, so the plain BN inside G's
    ConditionalBatchNorm is converted too: the statistics are synchronised and the
    condition-dependent gain and bias, applied per image after it, are unchanged. D has no BN."""
    if dist_info.world == 1:
        return G, D  # nothing to synchronise with
    if dist_info.device.type != "cuda":
        raise ConfigError("schedule.sync_batchnorm=true needs CUDA devices: torch's SyncBatchNorm does not run "
                          "on the CPU; use schedule.sync_batchnorm=false")
    return nn.SyncBatchNorm.convert_sync_batchnorm(G), nn.SyncBatchNorm.convert_sync_batchnorm(D)


def train(G: nn.Module, D: nn.Module, classifier: nn.Module, dataset: Dataset, loss: GeneratorLoss,
          cfg: DictConfig, out_dir: Path, *, tracker: Tracker | None = None, dist_info: Dist | None = None,
          seed: int = 0, resume: bool = False, tag: str = "", sample_logits: torch.Tensor | None = None,
          workers: int = 0) -> tuple[nn.Module, list[dict]]:
    """Train G and D for cfg.steps steps; returns the EMA generator (eval mode) and the per-step history.

    cfg is the `schedule` group: steps, batch_size, lr_g, lr_d, betas, ema_decay, ema_start,
    checkpoint_every, sample_every, log_every, and optionally precision, compile, sync_batchnorm.
    G's loss: loss.adversarial * hinge + the weighted reconstruction terms of `loss`.
    The history holds every step's losses (fetched from the device every log_every steps);
    the tracker gets the losses of each log_every-th step.
    """
    dist_info = dist_info or Dist()
    tracker = tracker or Tracker()
    device = dist_info.device
    out_dir = Path(out_dir)
    precision = str(cfg.precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"schedule.precision={precision!r} unknown; use {' or '.join(PRECISIONS)}")
    # G and D only: the classifier keeps its own precision, so G is conditioned on exact logits
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    G.to(device).train()
    D.to(device).train()
    # exclude_buffers: the buffers are copied, not averaged; no warm-up: ema_start says when averaging starts
    ema = ModelEmaV3(G, decay=float(cfg.ema_decay), exclude_buffers=True)
    G_ema = ema.module.requires_grad_(False)
    if cfg.sync_batchnorm:
        G, D = sync_batchnorm(G, D, dist_info)
    betas = tuple(float(b) for b in cfg.betas)
    opt_g = torch.optim.Adam(G.parameters(), lr=float(cfg.lr_g), betas=betas)
    opt_d = torch.optim.Adam(D.parameters(), lr=float(cfg.lr_d), betas=betas)
    steps, start = int(cfg.steps), 0
    ckpt_path = out_dir / CHECKPOINT
    if resume and ckpt_path.exists():
        state = load_checkpoint(ckpt_path, device)
        for module, name in ((G, "G"), (D, "D"), (G_ema, "G_ema")):
            load_module(module, state[name], ckpt_path, "resume")
        opt_g.load_state_dict(state["opt_g"]), opt_d.load_state_dict(state["opt_d"])
        start = resumable_step(state, ckpt_path, steps)
        log.info("%s: resumed from %s at step %d", tag or "generator", ckpt_path, start)
    if dist_info.is_main:
        (out_dir / "samples").mkdir(parents=True, exist_ok=True)

    # d_frozen: D in the G step, unwrapped so that DDP neither expects nor all-reduces D's gradients there
    g_model, d_model, d_frozen = G, D, D
    if dist_info.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        g_model, d_model = DDP(G, device_ids=ids), DDP(D, device_ids=ids)
    if cfg.compile:
        # wrappers only: G and D keep their state_dict keys (no "_orig_mod." prefix in checkpoints)
        g_model, d_model, d_frozen = torch.compile(g_model), torch.compile(d_model), torch.compile(D)
    sampler = StepBatches(len(dataset), int(cfg.batch_size), seed, start, steps, dist_info.rank, dist_info.world)
    # the sampler yields every step's batch in one pass, so there is no epoch end for persistent_workers to bridge
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=device.type == "cuda")

    def state(step: int) -> dict:
        return {"step": step, "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()}

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=start, desc=f"train {tag}".strip(), disable=not dist_info.is_main,
               dynamic_ncols=True)
    history: list[dict] = []
    pending: list[torch.Tensor] = []  # the losses of the steps since the last fetch, still on the device
    step, saved = start, start
    try:
        for step, (x, _) in enumerate(loader, start=start):
            x = x.to(device, non_blocking=True)
            n = len(x)
            with torch.no_grad():
                logits = classifier(x)
                cond = G.condition(logits)
            # D step: real and fake in one batch, so DDP sees one forward per backward.
            with torch.no_grad(), autocast():
                fake = g_model(logits, noise(step, n, G.z_dim, seed, dist_info.rank, 0, device))
            with autocast():
                scores = d_model(torch.cat([x, fake]), torch.cat([cond, cond])).float()
            d_loss = hinge_d(scores[:n], scores[n:])
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            # G step: D frozen, so the backward pass computes no gradients for D's weights (they
            # were discarded anyway); G's gradients are the same.
            D.requires_grad_(False)
            with autocast():
                fake = g_model(logits, noise(step, n, G.z_dim, seed, dist_info.rank, 1, device))
                g_adv = hinge_g(d_frozen(fake, cond).float())
            terms = loss(fake.float(), x, logits)
            g_loss = loss.adversarial * g_adv + sum(terms.values(), torch.zeros((), device=device))
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            D.requires_grad_(True)
            ema_update(ema, G, step, int(cfg.ema_start))

            names = ["d_loss", "g_adv", "g_loss", *terms]
            pending.append(torch.stack([d_loss, g_adv, g_loss, *terms.values()]).detach())
            bar.update(1)
            done = step + 1
            log_now = done % int(cfg.log_every) == 0 or done == steps
            save_now = dist_info.is_main and (done % int(cfg.checkpoint_every) == 0 or done == steps)
            if log_now or save_now:
                rows = torch.stack(pending).tolist()  # the only wait for the device in log_every steps
                history += [{"step": s, **dict(zip(names, row))} for s, row in enumerate(rows, done - len(rows))]
                pending.clear()
                check_finite(history[len(history) - len(rows):], steps, tag, saved)  # before anything is saved
            if log_now:
                record = history[-1]
                bar.set_postfix({k: f"{v:.3f}" for k, v in record.items() if k != "step"}, refresh=False)
                tracker.log({k: v for k, v in record.items() if k != "step"}, step=done)
            if dist_info.is_main and sample_logits is not None and (done % int(cfg.sample_every) == 0 or done == steps):
                with torch.no_grad():
                    path = out_dir / "samples" / f"step{done:06d}.png"
                    save_grid(G_ema(sample_logits.to(device)), path)
                tracker.image("samples", path, step=done)
            if save_now:
                save_checkpoint(ckpt_path, state(done))
                saved = done
    finally:
        bar.close()
    dist_info.barrier()
    return G_ema, history
