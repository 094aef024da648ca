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
import os
from pathlib import Path

import torch
from torch import nn

from pii.core.draws import Draws
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


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes a run may still take on `device`, and where the figure comes from: CUDA's free memory
    (and what torch's allocator holds unused); on the CPU the kernel's MemAvailable, or less where a
    cgroup (a container, a SLURM job) caps the process."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), "free on the GPU"
    figures = []
    try:
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f}
        figures.append((int(info["MemAvailable"]) * 1024, "MemAvailable"))
    except (OSError, KeyError, ValueError, IndexError):
        figures.append((os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages"))
    for limit, used in (("memory.max", "memory.current"), ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        try:
            cap = int(Path("/sys/fs/cgroup", limit).read_text()) - int(Path("/sys/fs/cgroup", used).read_text())
        except (OSError, ValueError):  # no such cgroup file, or "max": no cap
            continue
        figures.append((max(cap, 0), "the cgroup's memory limit"))
    return min(figures)


def saved_bytes(run) -> tuple[int, torch.Tensor]:
    """Bytes of the tensors autograd keeps for the backward of what `run()` computes (each storage
    once), plus its output's: what a forward holds until its backward runs, on any device; and the output."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = run()
    return sum(storages.values()) + out.nelement() * out.element_size(), out


def fit_memory(chunk: int | str, setting: int | str, classifier: nn.Module, augment, class_ids: list[int],
               size: int, splits: bool, device: torch.device) -> int | str:
    """Views per chunk (`chunk`: what the run settled; `setting`: augmentation.chunk as given) such
    that a step at `size` px, the largest stage's, fits MEMORY_BUDGET of the memory available: planned
    before the run, not met in the allocator. ConfigError, saying how many classes fit, where even one
    view at a time does not (all views at once where the loss does not `splits` them).

    A step holds, for every class, its augmented views and what their augmentation keeps for the
    backward (split: also the views' gradients), and for the views in the classifier at once what one
    view's forward keeps; both are measured here, one class's augmentation and one view's forward at
    `size`."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        image = torch.rand(1, 3, size, size, device=device, requires_grad=True)
        per_class, views = saved_bytes(lambda: augment(image, Draws.seeded(0, class_ids[:1], 0)))
        per_view, _ = saved_bytes(lambda: classifier(views[:1].detach().requires_grad_(), eager=True))
    # the views' gradients (split) and the image's parametrisation, its optimiser state and its gradient
    per_class += views.nelement() * views.element_size() + 8 * image.nelement() * image.element_size()
    views_per_class, classes = len(views), len(class_ids)
    free, source = available_memory(device)
    budget = MEMORY_BUDGET * free
    at_once = 1 if splits else views_per_class * classes  # the fewest views the classifier may take at once
    need = per_class * classes + per_view * at_once
    if need > budget:
        most = math.floor((budget - per_view) / per_class) if splits else math.floor(
            budget / (per_class + per_view * views_per_class))
        raise ConfigError(
            f"{classes} classes x {views_per_class} views at {size} px need ~{amount(need / MEMORY_BUDGET)}, but "
            f"{amount(free)} are available ({source}); at most {max(most, 0)} classes fit in one run: split class_id "
            f"with classes_per_job={max(most, 1)} (-m), or lower augmentation.ensemble.size")
    fits = math.floor((budget - per_class * classes) / per_view)
    total = views_per_class * classes
    wanted = total if chunk in ("auto", None) and device.type == "cpu" else chunk
    if wanted in ("auto", None) or int(wanted) <= fits:
        return chunk  # CUDA's auto is decided at each stage from the memory then free (views_per_chunk)
    if setting != "auto":
        raise ConfigError(f"augmentation.chunk={setting} views at {size} px need "
                          f"~{amount((per_class * classes + per_view * int(wanted)) / MEMORY_BUDGET)}, but {amount(free)} "
                          f"are available ({source}); set augmentation.chunk={fits} or auto")
    per_chunk = math.ceil(total / math.ceil(total / fits))  # equal chunks: one shape for the kernels
    log.info("memory: %d views at %d px go in chunks of %d (%.1f MB a view in the classifier, %.1f MB a class's "
             "views; %.1f GB available, %s)", total, size, per_chunk, per_view / 2**20, per_class / 2**20,
             free / 2**30, source)
    return per_chunk


def amount(nbytes: float) -> str:
    return f"{nbytes / 2**30:.1f} GB" if nbytes >= 2**30 else f"{nbytes / 2**20:.0f} MB"
