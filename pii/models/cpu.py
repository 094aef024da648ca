"""Process settings that make CPU runs fast.

glibc's malloc serves every block over 32 MB with a fresh mmap and returns it
to the system on free, so each step of an inversion page-faults its large
activations in again: an out-of-place op on a 77 MB bf16 tensor takes 26 ms
instead of 4, and a batched Lite0 step is ~1.6x slower (scripts/benchmark.py).
PyTorch's CPU tuning guides swap in jemalloc or tcmalloc for this; those are
not pip-installable, so we ask glibc itself to keep freed memory for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import types

import torch
from torch import nn

log = logging.getLogger(__name__)

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


@functools.cache
def _libc():
    """glibc through ctypes, or None (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        return libc
    except (OSError, AttributeError, TypeError):
        return None


@functools.cache  # once per process
def keep_freed_memory() -> bool:
    """Serve large blocks from the heap and never trim it (glibc only; elsewhere a no-op).

    A freed block is reused by the next step, so the peak barely moves; the
    process just does not hand memory back to the system until it exits."""
    libc = _libc()
    done = libc is not None and bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
    if not done:
        log.debug("no glibc mallopt here; large CPU allocations stay mmap-backed")
    return done


def release_freed_memory() -> None:
    """Hand the memory kept by keep_freed_memory back to the system (before measuring a peak)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def run_in_fp32(module: nn.Module) -> None:
    """Run `module` outside bf16 autocast, in fp32.

    oneDNN's bf16 backward of a strided grouped (depthwise) conv is ~6x slower
    than fp32 on this kind of CPU (16 x 96 x 113 px, stride 2: 56 ms against 9),
    and EfficientNet has one at each resolution drop: fp32 there makes a bf16
    step 1.33x faster (scripts/ab_cpu_step.py). pii.models.device applies it on
    the CPU only."""
    def fp32_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return type(self).forward(self, x.float())

    module.forward = types.MethodType(fp32_forward, module)  # bound: a deepcopy rebinds it to the copy
