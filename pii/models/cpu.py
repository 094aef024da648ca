"""Process settings and network changes that make CPU runs fast.

glibc's malloc serves every block over 32 MB with a fresh mmap and returns it
to the system on free, so each step of an inversion page-faults its large
activations in again: an out-of-place op on a 77 MB bf16 tensor takes 26 ms
instead of 4, and a batched Lite0 step is ~1.6x slower (scripts/benchmark.py).
PyTorch's CPU tuning guides swap in jemalloc or tcmalloc for this; those are
not pip-installable, so we ask glibc itself to keep freed memory for reuse.

The network changes (pii.models.device.adapt_network applies them on the CPU) each
remove a copy of a batch of activations that timm's layers make there, with the
same outputs and gradients up to rounding: "same" padding in the kernel, ReLU6 in
place without autograd's copy, and, under bf16, strided depthwise convolutions
whose backward alone runs in fp32.
"""

from __future__ import annotations

import collections
import ctypes
import ctypes.util
import functools
import logging
import platform
from collections.abc import Callable

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.layers.padding import get_same_padding
from torch import nn

log = logging.getLogger(__name__)

# oneDNN's instruction-set limit (by its name and its former one), and ATen's: under them the same
# CPU runs other kernels, as another machine would.
ONEDNN_ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
DISPATCH_VARIABLES = (*ONEDNN_ISA_LIMITS, "ATEN_CPU_CAPABILITY")

# mallopt parameters, from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4


def model_name() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what the platform says: the machine in a
    calibration's cache key and in a result's provenance."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine() or "unknown CPU"


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


class _BackwardInFp32(torch.autograd.Function):
    """A convolution in its input's dtype whose backward to the input runs in fp32 (the weights are
    frozen: no weight gradient)."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(weight)
        ctx.settings = (x.shape, x.dtype, stride, padding, dilation, groups)
        return F.conv2d(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype), stride, padding,
                        dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        shape, dtype, stride, padding, dilation, groups = ctx.settings
        # only the input's shape and layout are read when its gradient alone is asked for. torch's
        # nn.grad.conv2d_input passes an expanded one-element input instead, whose layout is not
        # channels_last: the gradient then comes back in NCHW, and a bf16 step at 224 px is 1.13x slower
        like = torch.empty(shape, dtype=torch.float32, device=grad.device, memory_format=torch.channels_last
                           if grad.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        grad_x = torch.ops.aten.convolution_backward(grad.float(), like, weight.float(), None, stride, padding,
                                                     dilation, False, [0, 0], groups, [True, False, False])[0]
        return grad_x.to(dtype), None, None, None, None, None, None


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding, dilation,
           groups: int, backward_in_fp32: bool = False) -> torch.Tensor:
    """F.conv2d; `backward_in_fp32` (under bf16 autocast, frozen weights): the forward in bf16, the
    backward to `x` in fp32.

    oneDNN's bf16 backward of a strided depthwise convolution is several times slower than fp32 on
    the CPU (16 x 96 x 113 px, stride 2: 56 ms against 9), and EfficientNet has one at each
    resolution drop; its forward is not, and running both in fp32 casts the activations into fp32
    and back in each direction."""
    if backward_in_fp32 and torch.is_autocast_enabled("cpu") and not weight.requires_grad:
        return _BackwardInFp32.apply(x.to(torch.get_autocast_dtype("cpu")), weight, bias, stride, padding,
                                     dilation, groups)
    return F.conv2d(x, weight, bias, stride, padding, dilation, groups)


class Conv2dBackwardInFp32(nn.Conv2d):
    """nn.Conv2d whose backward runs in fp32 under bf16 autocast (see `conv2d`)."""

    def _conv_forward(self, x, weight, bias):
        if self.padding_mode != "zeros":
            return super()._conv_forward(x, weight, bias)
        return conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups, True)


class KernelPaddedConv2d(Conv2dSame):
    """TensorFlow's "same" padding without padding the input.

    timm's Conv2dSame pads the input into a new tensor first (torch's convolutions pad both sides
    alike, and "same" pads one more on the right and bottom where a stride-2 convolution meets an
    even size); on the CPU that copy, its zero fill and its backward's copy are a sixth of a Lite0
    step. The same convolution with a zero row and column added at the kernel's top and left
    and symmetric padding gives every output the same terms (the extra ones are products with
    zero weights) and reads the input in place. `backward_in_fp32`: see `conv2d`."""

    backward_in_fp32 = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [get_same_padding(n, k, s, d) for n, k, s, d in
                zip(x.shape[-2:], self.kernel_size, self.stride, self.dilation)]
        if all(p % 2 == 0 for p in pads):
            weight, padding = self.weight, [p // 2 for p in pads]
        elif all(p % 2 == 1 for p in pads) and self.dilation == (1, 1):
            weight = F.pad(self.weight, (1, 0, 1, 0))  # a few hundred weights, not a batch of activations
            padding = [(p + 1) // 2 for p in pads]
        else:
            return super().forward(x)
        return conv2d(x, weight, self.bias, self.stride, padding, self.dilation, self.groups, self.backward_in_fp32)


def pad_in_kernel(net: nn.Module) -> None:
    """Every timm Conv2dSame of `net` becomes a KernelPaddedConv2d, in place (same weights)."""
    for module in net.modules():
        if type(module) is Conv2dSame:
            module.__class__ = KernelPaddedConv2d  # a subclass without state of its own: the same module, another forward


def strided_depthwise_backward_in_fp32(net: nn.Module) -> None:
    """Under bf16 on the CPU: every strided depthwise (grouped) convolution of `net` runs its backward
    in fp32 (see `conv2d`), in place."""
    for module in net.modules():
        if isinstance(module, nn.Conv2d) and module.groups > 1 and max(module.stride) > 1:
            if type(module) is KernelPaddedConv2d:
                module.backward_in_fp32 = True
            elif type(module) is nn.Conv2d:
                module.__class__ = Conv2dBackwardInFp32


class _ClampInPlace(torch.autograd.Function):
    """Clamp in place; the backward reads the clamped output, in which low < y < high exactly where
    low < x < high: no copy of the input is kept. `grad_in_place`: the backward masks the incoming
    gradient itself rather than a new tensor (see `mask_gradients_in_place`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float, grad_in_place: bool) -> torch.Tensor:
        x.clamp_(low, high)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.low, ctx.high, ctx.grad_in_place = low, high, grad_in_place
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (y,) = ctx.saved_tensors
        if ctx.grad_in_place:
            grad = torch.ops.aten.hardtanh_backward.grad_input(grad, y, ctx.low, ctx.high, grad_input=grad)
        else:
            grad = torch.ops.aten.hardtanh_backward(grad, y, ctx.low, ctx.high)
        return grad, None, None, None


class HardtanhInPlace(nn.Hardtanh):
    """nn.Hardtanh (ReLU6) in place without autograd's copy of its input (torch's in-place hardtanh
    keeps one for its backward; out of place it writes a new tensor instead)."""

    grad_in_place = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ClampInPlace.apply(x, self.min_val, self.max_val, self.grad_in_place)


# Autograd keeps a copy of these activations' input when they run in place (their backward reads
# the input, which the op overwrites); out of place there is no copy, and the same gradient.
COPIED_IN_PLACE = (nn.Hardtanh, nn.SiLU, nn.Hardswish, nn.Hardsigmoid)  # nn.ReLU6 is an nn.Hardtanh


def activations_without_copies(net: nn.Module) -> None:
    """In place, every in-place activation of `net` that autograd would copy: a Hardtanh (ReLU6)
    becomes a HardtanhInPlace, the others run out of place."""
    for module in net.modules():
        if isinstance(module, COPIED_IN_PLACE) and getattr(module, "inplace", False):
            if isinstance(module, nn.Hardtanh):
                module.__class__ = HardtanhInPlace  # a subclass without state of its own, as above
            else:
                module.inplace = False


def mask_gradients_in_place(net: nn.Module, size: int) -> None:
    """Each HardtanhInPlace of `net` whose output a convolution alone reads masks its gradient in place.

    That gradient is then the new tensor the convolution's backward made; read by more than one
    layer, or by an addition (whose backward hands one tensor to both of its inputs), it may be
    another branch's gradient too. Which layer reads which shows only in a forward, so this reads
    the graph of one probe image of `size` px, in fp32 (under bf16 a strided depthwise reader is
    a `conv2d(..., backward_in_fp32=True)`, whose backward also makes a new tensor)."""
    clamps = [m for m in net.modules() if isinstance(m, HardtanhInPlace)]
    if not clamps:
        return
    calls = {}  # the backward node of each call -> its module

    def record(module, args, output) -> None:
        calls[output.grad_fn] = module

    handles = [m.register_forward_hook(record) for m in clamps]
    parameter = next(net.parameters())
    probe = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0)).to(parameter.device)
    try:
        with torch.enable_grad(), torch.autocast(parameter.device.type, enabled=False):
            output = net(probe.requires_grad_(True))
    finally:
        for handle in handles:
            handle.remove()
    readers = collections.defaultdict(list)  # node -> the names of the nodes that read its output
    stack, seen = [output.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        for parent, _ in node.next_functions:
            if parent is not None:
                readers[parent].append(type(node).__name__)
                stack.append(parent)
    verdicts = collections.defaultdict(list)  # a module called twice must be safe at both calls
    for node, module in calls.items():
        verdicts[module].append(readers[node] == ["ConvolutionBackward0"])
    for module in clamps:
        module.grad_in_place = bool(verdicts[module]) and all(verdicts[module])


def network_changes(precision: str, size: int) -> list[tuple[str, Callable[[nn.Module], None]]]:
    """The CPU's changes to a network of input size `size`, named, in the order
    pii.models.device.adapt_network applies them (scripts/ab_cpu_step.py times each in turn)."""
    changes = [("padding_in_kernel", pad_in_kernel), ("activations_no_copies", activations_without_copies),
               ("gradient_masks_in_place", functools.partial(mask_gradients_in_place, size=size))]
    if precision == "bf16":
        changes.append(("fp32_strided_dw_backward", strided_depthwise_backward_in_fp32))
    return changes
