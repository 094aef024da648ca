"""Device policy: what a CPU or a CUDA device needs, decided once per run.

CPU   glibc keeps freed memory (pii.models.cpu); under bf16, strided depthwise convs
      run in fp32 (oneDNN's bf16 backward of those is ~6x slower).
CUDA  TF32 matmuls and convolutions, cudnn.benchmark only where asked (an
      inversion's 7 stage sizes each paid 25-41 s of autotuning, and its steps
      were no faster from 112 px up; `cudnn_benchmark`), torch.compile where the
      run is long enough to repay it (static shapes: one graph per stage size;
      `wants_compile`), and the augmented views split into chunks that fit the
      free memory.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

from pii.errors import ConfigError
from pii.models import cpu

log = logging.getLogger(__name__)

# Share of the free memory that a stage's chunk of views may take: the rest is
# the allocator's fragmentation and cudnn's workspaces.
MEMORY_BUDGET = 0.7
PROBE_VIEWS = 4


def resolve_device(name: str, cudnn_benchmark: bool = False) -> torch.device:
    """The device for `device=auto | cpu | cuda[:N]`, set up for this run (see `configure`)."""
    device = available_device(name)
    configure(device, cudnn_benchmark)
    return device


def available_device(name: str) -> torch.device:
    """The device `device=auto | cpu | cuda[:N]` names, if this machine has it (the preflight asks
    before a run starts); ConfigError otherwise."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available here; use device=cpu or device=auto")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; use device=auto, device=cpu or device=cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name} is not supported; use device=auto, device=cpu or device=cuda")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA devices; "
                          f"use device=cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


def configure(device: torch.device, cudnn_benchmark: bool = False) -> None:
    """Process-wide settings for `device`. `cudnn_benchmark`: cuDNN times its algorithms for every
    new input shape and keeps the fastest; that pays where one shape runs thousands of steps
    (feedforward training), not in an inversion's stages (docs/gpu.md)."""
    if device.type == "cpu":
        cpu.keep_freed_memory()
    elif device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls; fp32 convolutions use TF32 by default
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = cudnn_benchmark
        # compile=true makes one graph per stage size (static shapes): allow more than dynamo's default 8
        dynamo = torch._dynamo.config
        name = "recompile_limit" if hasattr(dynamo, "recompile_limit") else "cache_size_limit"
        setattr(dynamo, name, max(getattr(dynamo, name), 32))


# compile=auto's cost model, measured on an H100 (docs/results/gpu/2026-11-26_h100_compiled and
# docs/results/gpu/2026-11-26_h100_cudnn_benchmark;
# Lite0, bf16, channels_last, 640 views, cold compile cache): the first step at a new size took 46-55 s
# compiled against 25-41 s eager, both with cuDNN's autotuning, and ~9 s eager without it (its
# default now); a step at 224 px ran in 0.050 s compiled (BatchNorm unfolded) against 0.072 s eager
# with BatchNorm folded (0.124 s unfolded). The saving is taken to scale with the pixels through the
# network; compiling with BatchNorm folded is not yet timed.
COMPILE_SECONDS = 40.0
SAVED_SECONDS_PER_VIEW_PIXEL = (0.072 - 0.050) / 640 / 224**2


def wants_compile(setting: bool | str, device: torch.device, stages=(), views: int = 1,
                  fixed_size: int | None = None) -> bool:
    """Whether to torch.compile the classifier for a run of `stages` (pii.core.schedule.Stage) with
    `views` augmented images per step; a `fixed_size` model sees that size at every stage.

    `compile=auto`: on CUDA only where the steps saved pay for compiling every distinct size
    (COMPILE_SECONDS each, from a cold cache). The paper preset on Lite0 with 20 classes saves
    ~28 s for ~280 s of compiling: eager; a fixed-size model (one graph) or ~200+ classes per run
    compile. Never on the CPU, where compiled steps ran 2x slower. A sweep's later jobs find the
    compiled graphs in inductor's cache (~3 s a size): there `compile=true` pays.
    """
    if setting == "auto":
        sizes = [fixed_size or stage.size for stage in stages]
        saved = sum(size * size * stage.steps for size, stage in zip(sizes, stages)) * views * SAVED_SECONDS_PER_VIEW_PIXEL
        return device.type == "cuda" and saved > COMPILE_SECONDS * len(set(sizes))
    if not isinstance(setting, bool):
        raise ConfigError(f"compile must be true, false or auto, got {setting!r}")
    return setting


def adapt_network(net: nn.Module, device: torch.device, precision: str, size: int) -> None:
    """Model changes one device needs and another must not get (`size`: the network's input size)."""
    if device.type == "cpu":  # each copies a batch of activations less, forward or backward
        for _, change in cpu.network_changes(precision, size):
            change(net)


def views_per_chunk(chunk: int | str | None, classifier: nn.Module, views: int, size: int) -> int:
    """How many augmented views go through the classifier at once at this stage.

    An int: that many. None / "auto": all of them on the CPU; on CUDA as many as
    fit MEMORY_BUDGET of the free memory, from the memory one forward and
    backward of PROBE_VIEWS views takes at this size.
    """
    if chunk not in (None, "auto"):  # checked by pii.run.config.check_invert
        return min(int(chunk), views)
    device = next(classifier.buffers()).device
    if device.type != "cuda" or views <= PROBE_VIEWS:
        return views
    per_view = _memory_per_view(classifier, size, device)
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)  # cached by torch, reusable
    fits = max(1, math.floor(MEMORY_BUDGET * free / per_view))
    if fits >= views:
        return views
    chunks = math.ceil(views / fits)
    per_chunk = math.ceil(views / chunks)  # equal chunks: one compiled shape, not two
    log.info("%d views at %d px take ~%.0f MB each; %d chunks of <= %d views", views, size, per_view / 2**20,
             chunks, per_chunk)
    return per_chunk


def _memory_per_view(classifier: nn.Module, size: int, device: torch.device) -> float:
    """Bytes one view's forward and backward holds at its peak (eager, uncompiled: no extra compile)."""
    probe = torch.zeros(PROBE_VIEWS, 3, size, size, device=device, requires_grad=True)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    classifier(probe, eager=True).float().logsumexp(-1).sum().backward()
    peak = torch.cuda.max_memory_allocated(device) - base
    del probe
    return peak / PROBE_VIEWS
