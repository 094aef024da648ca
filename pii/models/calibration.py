"""`precision=auto`, `channels_last=auto` and `augmentation.chunk=auto`, settled on the machine that runs.

Which settings are fastest is a property of the CPU, not of the code: bf16 autocast is 2x faster
than fp32 on one AVX512-BF16 CPU and slower on another, and slower again where oneDNN is held to
AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`). So on the CPU a short calibration times the run's own classifier,
forward and backward at one stage size, for each candidate in turn over a few rounds (median
seconds per view): first precision x memory format at one chunk of views, then views per chunk
with the fastest format. The medians are cached in a small JSON file per CPU model, instruction
set, threads, torch version, model and pii's timed code (`$PII_CACHE`, else ~/.cache/pii): a second
run pays nothing.

An explicit setting always wins; the calibration then only chooses the others. On CUDA the device
policy stays: bf16, channels_last, and as many views per chunk as fit the free memory
(pii.models.device.views_per_chunk).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from torch import nn

from pii.core.precision import AUTO, PRECISIONS
from pii.errors import few
from pii.models import cpu

log = logging.getLogger(__name__)

ROUNDS = 3  # timed calls of each candidate, in turn, after one untimed call each (oneDNN builds its kernels)
# Before that, each precision and memory format runs PROBE views: one that takes DROP times the fastest's is
# not timed further. Without AVX512-BF16 (ONEDNN_MAX_CPU_ISA=AVX2) bf16 convolutions leave oneDNN for
# torch's reference kernels, 28x slower than fp32 (Lite0, 224 px), and timing them in full would cost
# minutes; between usable candidates the probes differed by up to 2.4x on loaded cores.
PROBE = 4
DROP = 5.0
# Views per chunk timed. Precision and memory format are compared at the largest that the run's views
# allow (what the run uses unless a smaller chunk wins); a run with more views than the largest splits
# them only where a smaller chunk won.
CHUNKS = (8, 16, 32, 64)
# A smaller chunk is chosen only if it times this much faster than the largest: on 2 shared cores the
# candidates' medians moved by up to 14% between calibrations while whole runs with either chunk
# differed by less than their own noise (5%), and splitting is never faster by much on the CPU.
SPLIT_GAIN = 1.10
CACHE_FILE = "calibration.json"


@dataclass(frozen=True)
class Candidate:
    """One way to run the classifier: autocast precision, memory format and views per forward/backward
    (`chunk`), timed over `views` views (0: one chunk), so chunks are compared on the same work."""
    precision: str
    channels_last: bool
    chunk: int
    views: int = field(default=0, compare=False)

    @property
    def label(self) -> str:
        return f"{self.precision}/{'nhwc' if self.channels_last else 'nchw'}/{self.chunk}"


@dataclass
class DeviceSettings:
    """What a run uses, and where it came from (metrics.json's `device_settings`)."""
    precision: str
    channels_last: bool
    chunk: int | str  # views per forward/backward, or "auto" (pii.models.device.views_per_chunk decides)
    source: str  # config: every choice set explicitly | policy: CUDA's | measured: calibrated by this run |
    #              cache: calibrated by an earlier run on this machine
    machine: str = ""  # the cache key: CPU model, instruction set, threads, torch version
    size: int | None = None  # the stage size the candidates were timed at
    seconds_per_view: dict[str, float] = field(default_factory=dict)  # each candidate's median (Candidate.label)
    calibration_seconds: float = 0.0  # spent calibrating in this run (0 from the cache)

    def line(self) -> str:
        """The one log line that says what was chosen and why."""
        chosen = f"precision={self.precision} channels_last={str(self.channels_last).lower()} chunk={self.chunk}"
        if self.source not in ("measured", "cache"):
            return f"device settings ({self.source}): {chosen}"
        timings = ", ".join(f"{k} {v * 1e3:.1f}" for k, v in sorted(self.seconds_per_view.items(), key=lambda i: i[1]))
        how = f"calibrated in {self.calibration_seconds:.1f} s" if self.source == "measured" else "cached calibration"
        return f"device settings ({how}; {self.machine}; {self.size} px): {chosen}; ms per view: {timings}"


def chunk_candidates(views: int) -> list[int]:
    """Views per chunk worth timing for a step of `views` views: CHUNKS below it, and all of them
    while that is no more than the largest of CHUNKS."""
    return [c for c in CHUNKS if c < views] + ([views] if views <= CHUNKS[-1] else [])


def medians(candidates: list[Candidate], seconds_per_view: Callable[[Candidate], float],
            rounds: int = ROUNDS) -> dict[str, float]:
    """Median seconds per view of each candidate: one untimed call each, then `rounds` calls of
    each in turn, so that a machine whose speed drifts (shared cores) slows them all alike."""
    for candidate in candidates:
        seconds_per_view(candidate)
    times: dict[str, list[float]] = {c.label: [] for c in candidates}
    for _ in range(rounds):
        for candidate in candidates:
            times[candidate.label].append(seconds_per_view(candidate))
    return {label: statistics.median(t) for label, t in times.items()}


def calibrate(precisions: list[str], layouts: list[bool], chunks: list[int],
              seconds_per_view: Callable[[Candidate], float], known: dict[str, float] | None = None,
              rounds: int = ROUNDS) -> tuple[Candidate, dict[str, float]]:
    """The fastest candidate, and the medians it was chosen from (`known` plus those it timed).

    Precision x memory format are compared at the largest of `chunks`, after a probe of PROBE views
    each (a candidate DROP times slower than the fastest probe goes no further), then `chunks` with
    the fastest of them. `seconds_per_view(candidate)` times one forward and backward
    (pii.models.calibration.StepTimer on a real model; a table of figures in tests); figures already
    `known` (the cache) are not timed again, and a choice with one option is not timed at all."""
    known = dict(known or {})

    def fastest(candidates: list[Candidate], probe: bool) -> Candidate:
        if len(candidates) > 1 and any(c.label not in known for c in candidates):
            if probe and max(c.chunk for c in candidates) > PROBE:
                probe_of = {c: replace(c, chunk=PROBE) for c in candidates}
                for c in candidates:
                    if probe_of[c].label not in known:
                        known[probe_of[c].label] = seconds_per_view(probe_of[c])
                floor = min(known[probe_of[c].label] for c in candidates)
                candidates = [c for c in candidates if known[probe_of[c].label] <= DROP * floor]
            missing = [c for c in candidates if c.label not in known]
            if len(candidates) > 1 and missing:
                known.update(medians(missing, seconds_per_view, rounds))
        return min(candidates, key=lambda c: known.get(c.label, math.inf))

    best = fastest([Candidate(p, cl, max(chunks)) for p in precisions for cl in layouts], probe=True)
    whole = Candidate(best.precision, best.channels_last, max(chunks), max(chunks))
    best = fastest([replace(whole, chunk=c) for c in chunks], probe=False)
    if known.get(best.label, math.inf) * SPLIT_GAIN > known.get(whole.label, math.inf):
        best = whole
    return best, known


class StepTimer:
    """Seconds per view of a forward and backward of the classifier at `size` px, built by
    `build(precision, channels_last)`, as an inversion step makes them: `candidate.views` views of
    one image (a random scale each, as ColorShift gives), through the classifier `candidate.chunk`
    at a time, each chunk's backward also running back through the views' shared graph (what
    splitting costs beyond the classifier), down to the image's gradient."""

    def __init__(self, build: Callable[[str, bool], nn.Module], size: int, device: torch.device):
        self.build, self.size, self.device = build, size, device
        self.classifiers: dict[tuple[str, bool], nn.Module] = {}

    def __call__(self, candidate: Candidate) -> float:
        key = (candidate.precision, candidate.channels_last)
        if key not in self.classifiers:
            self.classifiers[key] = self.build(*key)
        count = max(candidate.views, candidate.chunk)
        image = torch.rand(1, 3, self.size, self.size, device=self.device, requires_grad=True)
        scale = torch.rand(count, 1, 1, 1, device=self.device)
        start = time.perf_counter()
        views = image * scale
        for first in range(0, count, candidate.chunk):
            loss = self.classifiers[key](views[first:first + candidate.chunk]).logsumexp(-1).sum()
            loss.backward(retain_graph=first + candidate.chunk < count)
        return (time.perf_counter() - start) / count


def machine() -> str:
    """The cache key's machine part: CPU model, the instruction set torch and oneDNN may use,
    threads and torch version (any of them changes which candidate is fastest)."""
    isa = torch.backends.cpu.get_cpu_capability()
    limit = next((os.environ[name] for name in cpu.ONEDNN_ISA_LIMITS if os.environ.get(name)), None)
    if limit:
        isa += f", oneDNN<={limit}"
    return f"{cpu.model_name()}; {isa}; {torch.get_num_threads()} threads; torch {torch.__version__}"


# The code whose changes move the timings: the CPU's network changes, the device policy, the
# classifier's build (BatchNorm folding) and the timer itself.
TIMED_CODE = ("cpu.py", "device.py", "classifier.py", "calibration.py")


@functools.cache
def code_version() -> str:
    """A digest of TIMED_CODE: timings cached by other code (an older pii, whose network was
    slower in one format) are not reused, and another pii's timings are not mixed into these."""
    digest = hashlib.sha256()
    for name in TIMED_CODE:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


def cache_path() -> Path:
    return Path(os.environ.get("PII_CACHE") or Path.home() / ".cache" / "pii") / CACHE_FILE


def read_cache(key: str) -> dict:
    """The cached entry of `key`, its timings checked whoever wrote the file: a figure that is not a
    time (negative, zero, nan, a string) would pick a setting by it, so it is dropped (timed afresh),
    and the run says so."""
    try:
        entry = json.loads(cache_path().read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(entry, dict) or not isinstance(entry.get("seconds_per_view"), dict):
        return {}
    timings = entry["seconds_per_view"]
    good = {label: t for label, t in timings.items() if isinstance(t, (int, float)) and not isinstance(t, bool)
            and math.isfinite(t) and t > 0}
    if len(good) < len(timings):
        bad = [f"{label}={timings[label]!r}" for label in timings if label not in good]
        log.warning("calibration cache %s: %d timings are not times (%s); timing them afresh", cache_path(),
                    len(bad), few(bad))
    return {**entry, "seconds_per_view": good}


def write_cache(key: str, entry: dict) -> None:
    """Add `key` to the cache file (replaced in one rename: a sweep's jobs may write at once)."""
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        table = {**(table if isinstance(table, dict) else {}), key: entry}
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
            json.dump(table, f, indent=1, sort_keys=True)
        os.replace(f.name, path)
    except OSError as err:  # a read-only home costs the next run a calibration, not this run
        log.warning("calibration not cached (%s: %s)", type(err).__name__, err)


def timed_size(stages) -> int:
    """The stage size to time at: the one at which half of the run's pixels x steps are done."""
    work = [stage.size**2 * stage.steps for stage in stages]
    total, done = sum(work), 0
    for stage, w in zip(stages, work):
        done += w
        if done >= total / 2:
            return stage.size
    return stages[-1].size


def even_chunk(views: int, chunk: int) -> int:
    """Views per chunk when `views` are split into chunks of at most `chunk`, all of one size (one
    shape for the kernels, and for torch.compile)."""
    return math.ceil(views / math.ceil(views / chunk))


def settle(precision: str, channels_last: bool | str, chunk: int | str, device: torch.device, model: str,
           stages, views: int, build: Callable[[str, bool], nn.Module], splits: bool = True,
           seconds_per_view: Callable[[Candidate], float] | None = None) -> DeviceSettings:
    """The run's precision, memory format and views per chunk: each set value kept, each `auto` one
    chosen (CUDA: the device policy; CPU: calibrated, or from the cache). `model` names the
    classifier in the cache key (with everything else that changes its speed: fold, ...);
    `build(precision, channels_last)` makes it for timing; `splits`: the loss allows views in
    several chunks; `seconds_per_view` replaces the real timer (tests)."""
    explicit = precision != AUTO and channels_last != "auto" and (chunk != "auto" or not splits)
    if device.type != "cpu" or explicit:
        source = "config" if explicit else "policy"
        return DeviceSettings("bf16" if precision == AUTO else precision,
                              True if channels_last == "auto" else bool(channels_last), chunk, source)
    size, where = timed_size(stages), machine()
    key = f"{where}; {model}; {size} px; pii code {code_version()}"
    known = read_cache(key).get("seconds_per_view", {})
    started = time.perf_counter()
    best, timings = calibrate(
        PRECISIONS if precision == AUTO else [precision],
        [True, False] if channels_last == "auto" else [bool(channels_last)],
        chunk_candidates(views) if chunk == "auto" and splits else [views if chunk == "auto" else min(int(chunk), views)],
        seconds_per_view or StepTimer(build, size, device), known)
    measured = set(timings) - set(known)
    if measured:
        write_cache(key, {"seconds_per_view": timings, "date": time.strftime("%Y-%m-%d")})
    if chunk != "auto" or not splits:
        chosen = chunk if splits else "auto"
    else:  # the largest chunk timed won: more views were never seen to lose, so no split
        chosen = views if best.chunk >= max(chunk_candidates(views)) else even_chunk(views, best.chunk)
    source = "measured" if measured else "cache" if timings else "config"  # config: one option each, nothing timed
    return DeviceSettings(best.precision, best.channels_last, chosen, source, where, size, timings,
                          time.perf_counter() - started if measured else 0.0)
