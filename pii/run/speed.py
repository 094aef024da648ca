"""How fast an inversion runs, against the machine's own peak (scripts/benchmark.py).

Two paths invert the same classes with the pieces pii.run.build makes of the config (the same param,
augmentation, loss, stages, steps and ensemble):
  default  this project: frozen weights, all classes in one batch, precision /
           channels_last / views per chunk as a run settles them (pii.models.calibration), compile
  naive    what the paper's code does: weights NOT frozen (their gradients are
           computed at every step), one class per run, fp32, no channels_last,
           the loss read back every step and, on CUDA, the cache emptied every step
"""

from __future__ import annotations

import logging
import resource
import time
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch.utils.flop_counter import FlopCounterMode

from pii import models
from pii.core.draws import Draws
from pii.core.observers import Observer
from pii.core.schedule import Stage
from pii.models import cpu
from pii.models.calibration import DeviceSettings
from pii.run import build

log = logging.getLogger(__name__)


@dataclass
class PathResult:
    name: str
    classes_per_run: int
    precision: str
    channels_last: bool
    compile: bool
    param: str = ""  # the param group's name: what image the path optimised (pixel, fourier, maco)
    classes: int = 0
    seconds: float = 0.0
    steps: int = 0
    images: int = 0
    flops: float = 0.0
    peak_memory_mb: float = 0.0
    peak_memory_kind: str = ""
    warmup_seconds: float = 0.0
    run_seconds: list[float] = field(default_factory=list)
    stage_sizes: list[int] = field(default_factory=list)
    settings: DeviceSettings | None = None  # the default path's precision, format and chunk, and how chosen

    @property
    def seconds_per_class(self) -> float:
        return self.seconds / self.classes

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.seconds

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds

    @property
    def flops_per_second(self) -> float:
        return self.flops / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_flops(device: torch.device, dtype: torch.dtype, size: int | None = None, reps: int = 5) -> float:
    """The best FLOP/s of a large square matmul: the machine's practical peak for `dtype`."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up: thread pools, kernels
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


class PeakMemory:
    """Peak memory inside a `with` block: CUDA max_memory_allocated, or on CPU the
    process's peak resident set (VmHWM, reset through /proc/self/clear_refs; where
    that is not possible, ru_maxrss: the peak over the whole process)."""

    def __init__(self, device: torch.device):
        self.device, self.mb, self.kind = device, 0.0, ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            cpu.release_freed_memory()  # else the previous path's kept heap counts in this one's peak
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.kind = "peak RSS"
            except OSError:
                self.kind = "process peak RSS (ru_maxrss)"
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            self.mb, self.kind = torch.cuda.max_memory_allocated(self.device) / 2**20, "CUDA max allocated"
        elif self.kind == "peak RSS":
            with open("/proc/self/status") as f:
                kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))
            self.mb = kb / 1024
        else:
            self.mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PaperHabits(Observer):
    """What the paper's code does at every step besides the maths: it empties the GPU cache."""

    def step_done(self, index, step, loss, probs):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def count_flops(pieces: build.Pieces, num_classes: int) -> float:
    """FLOPs of a whole run: one step per stage size under torch's FlopCounterMode, times its steps.

    A step is the run's: the param renders the image (a Fourier image adds its inverse FFT), the
    augmentation makes the views, the classifier and the loss read them. The backward is counted for
    the param's gradient only; where the weights are not frozen their gradients are added as one more
    forward's worth (each layer's weight gradient costs the multiply-adds of its forward). Counting
    them directly is wrong: torch's counter prices a grouped (depthwise) conv's weight gradient as a
    dense conv, 125 GFLOP instead of ~3 for Lite0 at 4x224 px.
    """
    total = 0.0
    targets = torch.arange(num_classes, device=pieces.device)
    weight_grads = any(p.requires_grad for p in pieces.classifier.parameters())
    param = pieces.param(num_classes)
    for index, stage in enumerate(pieces.stages):
        draws = Draws.seeded(0, range(num_classes), index)
        param.grow(stage, draws)
        with FlopCounterMode(display=False) as forward:
            image = param.render()
            views = pieces.augment(image, draws)
            per_image = views.shape[0] // num_classes
            images = torch.arange(num_classes, device=pieces.device).repeat_interleave(per_image)
            # eager: FlopCounterMode counts eager ops
            loss = pieces.loss.views_loss(pieces.classifier, views, targets.repeat_interleave(per_image), images,
                                          eager=True)[0] + pieces.loss.image_loss(image)
        with FlopCounterMode(display=False) as backward:
            torch.autograd.grad(loss, param.parameters())
        step = forward.get_total_flops() * (2 if weight_grads else 1) + backward.get_total_flops()
        total += step * stage.steps
    return total


def naive_classifier(cfg: DictConfig, device: torch.device) -> models.Classifier:
    """The paper's code: timm's network as it is, fp32, weight gradients at every step."""
    classifier = models.build(cfg.model, device, precision="fp32", channels_last=False, compile=False, fold=False,
                              adapt=False)
    classifier.net.requires_grad_(True)
    return classifier


def measure_path(cfg: DictConfig, class_ids: list[int], device: torch.device, naive: bool) -> PathResult:
    """Invert `class_ids` along one path, with the pieces invert.py's runner builds (pii.run.build: the
    same param, augmentation, loss, optimiser and stages); time it, count its FLOPs, take its peak memory."""
    torch.manual_seed(int(cfg.seed))
    per_run = 1 if naive else len(class_ids)
    pieces = build.pieces(cfg, device, class_ids[:per_run], given=naive_classifier(cfg, device) if naive else None)
    if naive:  # and, as the paper's code, the loss read back every step (and the CUDA cache emptied)
        pieces.log_every = 1
    else:
        log.info(pieces.settings.line())
    classifier = pieces.classifier
    runs = [class_ids[i:i + per_run] for i in range(0, len(class_ids), per_run)]
    result = PathResult("naive" if naive else "default", per_run, classifier.precision,
                        classifier.channels_last, pieces.compiled, param=str(cfg.param.name), settings=pieces.settings)
    flops_per_run = count_flops(pieces, per_run)
    # one step per stage size before timing: compiles (and, with cudnn_benchmark, autotunes) every shape
    observer = PaperHabits() if naive else None
    warm_up = [Stage(s.size, 1, s.paste) for s in pieces.stages]
    _sync(device)
    start = time.perf_counter()
    pieces.invert(runs[0], observer, run_stages=warm_up)
    _sync(device)
    result.warmup_seconds = time.perf_counter() - start
    with PeakMemory(device) as memory:
        for ids in runs:
            _sync(device)
            start = time.perf_counter()
            pieces.invert(ids, observer)
            _sync(device)
            result.run_seconds.append(time.perf_counter() - start)
            log.info("%s path: classes %s in %.1f s", result.name, ids, result.run_seconds[-1])
    steps = sum(s.steps for s in pieces.stages)
    ensemble = pieces.augment.copies
    result.classes, result.seconds = len(class_ids), sum(result.run_seconds)
    result.stage_sizes = [s.size for s in pieces.stages]
    result.steps = steps * len(runs)
    result.images = steps * len(class_ids) * ensemble
    result.flops = flops_per_run * len(runs)
    result.peak_memory_mb, result.peak_memory_kind = memory.mb, memory.kind
    return result


def format_settings(settings: DeviceSettings) -> str:
    """What precision=auto (and the rest) chose, and each timed candidate's median, fastest first."""
    lines = [settings.line().split("; ms per view")[0]]
    if settings.seconds_per_view:
        lines.append(f"{'candidate':<18} {'ms/view':>8} {'vs chosen':>9}  (one forward+backward at {settings.size} px)")
        chosen = min(settings.seconds_per_view.values())
        for label, seconds in sorted(settings.seconds_per_view.items(), key=lambda item: item[1]):
            lines.append(f"{label:<18} {seconds * 1e3:>8.2f} {seconds / chosen:>8.2f}x")
    return "\n".join(lines)


def format_report(results: list[PathResult], peaks: dict[str, float]) -> str:
    head = (f"{'path':<8} {'classes/run':>11} {'precision':>9} {'ch_last':>7} {'compile':>7} {'chunk':>5} {'s/class':>8} "
            f"{'steps/s':>8} {'images/s':>9} {'peak MB':>8} {'GFLOP/s':>8} {'% peak':>7} {'warm-up s':>9}")
    lines = [head]
    for r in results:
        share = r.flops_per_second / peaks[r.precision]
        lines.append(f"{r.name:<8} {r.classes_per_run:>11} {r.precision:>9} {str(r.channels_last):>7} "
                     f"{str(r.compile):>7} {str(r.settings.chunk if r.settings else 'all'):>5} "
                     f"{r.seconds_per_class:>8.2f} {r.steps_per_second:>8.2f} "
                     f"{r.images_per_second:>9.1f} {r.peak_memory_mb:>8.0f} {r.flops_per_second / 1e9:>8.1f} "
                     f"{share:>7.1%} {r.warmup_seconds:>9.1f}")
    return "\n".join(lines)


def objective_step_seconds(cfg: DictConfig, classifier: models.Classifier, targets: list[int],
                           device: torch.device, steps: int = 5) -> float:
    """The median seconds of one step (augment, forward, objective, backward) at the model's input
    size for `cfg`'s objective on `targets`, after one step of warm-up: a unit objective's network
    stops after the deepest layer its terms read (pii.models.layers.Reader)."""
    from pii.core.inversion import forward_backward

    objective, augment = build.loss(cfg, classifier), build.augmentation(cfg)
    size = classifier.input_size
    image = torch.rand(len(targets), 3, size, size, device=device, requires_grad=True)
    draws = Draws.seeded(int(cfg.seed), targets, 0)
    times = []
    try:
        for _ in range(steps + 1):
            _sync(device)
            start = time.perf_counter()
            views = augment(image, draws)
            view_targets = torch.tensor(targets, device=device).repeat_interleave(len(views) // len(targets))
            forward_backward(classifier, objective, views, view_targets, image, len(views))
            image.grad = None
            _sync(device)
            times.append(time.perf_counter() - start)
    finally:
        if hasattr(objective.read, "remove"):
            objective.read.remove()
    return sorted(times[1:])[len(times[1:]) // 2]
