"""The augmentations of PII (paper Section 3), and the pieces lucent's and MACO's
recipes add: small pieces with one signature, `views = piece(views, draws)`,
composed in order. Each is drawn afresh at every call, every image's from its own
stream (pii.core.draws): before the ensemble `views` holds one row per image,
after it image i's copies are rows i * k .. (i + 1) * k - 1.

Each piece is a class that conf/augmentation/pii.yaml names by `_target_`, one key per
piece in the order they are applied (pii.run.build.augmentation): a new transform is a
class here and a line there. A piece refuses an argument outside what it means with a
ValueError naming the argument; the builder adds the config key."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pii.core.draws import Draws


def per_image(x: torch.Tensor, draws: Draws) -> int:
    """Rows of `x` per image: 1 before the ensemble, its size after."""
    return len(x) // len(draws)


def each_offset(x: torch.Tensor, draws: Draws, low: int, high: int,
                move: Callable[[torch.Tensor, int, int], torch.Tensor]) -> torch.Tensor:
    """`move(rows, dy, dx)` on each image's rows, with the image's own offset (dy, dx) in [low, high)."""
    offsets = draws.randint(low, high, 1, 2).tolist()
    return torch.cat([move(rows, dy, dx) for rows, (dy, dx) in zip(x.split(per_image(x, draws)), offsets)])


def require(ok: bool, name: str, rule: str, value) -> None:
    """Argument `name` outside what it means: a ValueError that starts with the name, so that the builder
    names the config key by writing the transform's key before it (pii.run.config.transform)."""
    if not ok:
        raise ValueError(f"{name} must be {rule}, got {value!r}")


def count(name: str, value, low: int) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= low, name,
            f"a whole number >= {low}", value)
    return value


def number(name: str, value, low: float, high: float = math.inf, why: str = "") -> float:
    require(isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high, name,
            f"a number in [{low:g}, {high:g}]{f' ({why})' if why else ''}", value)
    return float(value)


def share_range(name: str, pair, high: float = math.inf, why: str = "") -> tuple[float, float]:
    """[low, high] with 0 < low <= high (<= `high`)."""
    ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair)
          and 0 < pair[0] <= pair[1] <= high)
    bound = f"low <= high <= {high:g}{f' ({why})' if why else ''}" if high != math.inf else "low <= high"
    require(ok, name, f"[low, high] with 0 < {bound}", list(pair) if isinstance(pair, (list, tuple)) else pair)
    return float(pair[0]), float(pair[1])


class Augmentation(nn.Sequential):
    """The pieces in order: `views = augmentation(images, draws)`."""

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        for piece in self:
            x = piece(x, draws)
        return x

    @property
    def copies(self) -> int:
        """Views per image: the product of the pieces' copies (the ensemble's size; a piece without
        `copies` keeps the number of views)."""
        return math.prod(getattr(piece, "copies", 1) for piece in self)


class Jitter(nn.Module):
    """Roll each image by its own random offset in [-max_shift, max_shift] per axis, wrapping around
    (for one image: the paper's jitter)."""

    def __init__(self, max_shift: int):
        super().__init__()
        self.max_shift = count("max_shift", max_shift, 0)

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        return each_offset(x, draws, -self.max_shift, self.max_shift + 1,
                           lambda rows, dy, dx: torch.roll(rows, shifts=(dy, dx), dims=(-2, -1)))


class Ensemble(nn.Module):
    """Repeat each image `size` times, copies of one image next to each other."""

    def __init__(self, size: int):
        super().__init__()
        self.size = count("size", size, 1)

    @property
    def copies(self) -> int:
        return self.size

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        return x.repeat_interleave(self.size, dim=0)


class Flip(nn.Module):
    """Mirror each copy left-right with probability p."""

    def __init__(self, p: float):
        super().__init__()
        self.p = number("p", p, 0, 1, "a probability")

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        flip = draws.rand(per_image(x, draws), 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-1), x)


class ColorShift(nn.Module):
    """x' = sigma * x + mu per copy and channel, mu ~ U(-alpha, alpha), sigma = exp(U(-beta, beta)).

    Applied to [0, 1] pixels before the model's normalisation, and not clamped. alpha = beta = 0
    is the identity and draws nothing: the same run as no ColorShift (sweep_color_shift's 0, 0).
    """

    MAX_BETA = 80.0  # exp(80) is a finite float; exp(89) is not

    def __init__(self, alpha: float, beta: float):
        super().__init__()
        self.alpha = number("alpha", alpha, 0)
        self.beta = number("beta", beta, 0, self.MAX_BETA, "ColorShift scales by exp(U(-beta, beta))")

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        if self.alpha == 0 and self.beta == 0:
            return x
        shape = (per_image(x, draws), x.shape[1], 1, 1)
        mu = (draws.rand(*shape, device=x.device) * 2 - 1) * self.alpha
        sigma = torch.exp((draws.rand(*shape, device=x.device) * 2 - 1) * self.beta)
        return sigma * x + mu


class Pad(nn.Module):
    """lucent's pad: a constant border of `pixels` px on every side, `value` (lucent: 0.5, grey)."""

    def __init__(self, pixels: int, value: float):
        super().__init__()
        self.pixels, self.value = count("pixels", pixels, 0), number("value", value, 0, 1, "a pixel value")

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        return F.pad(x, (self.pixels,) * 4, mode="constant", value=self.value)


class Shift(nn.Module):
    """lucent's jitter: a random crop `pixels` px smaller in each axis (no wrap-around), one offset per image."""

    def __init__(self, pixels: int):
        super().__init__()
        self.pixels = count("pixels", pixels, 0)

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        h, w = x.shape[-2] - self.pixels, x.shape[-1] - self.pixels
        return each_offset(x, draws, 0, self.pixels + 1, lambda rows, dy, dx: rows[..., dy:dy + h, dx:dx + w])


class ScaleRotate(nn.Module):
    """lucent's random scale and rotation, drawn per copy: zoom by s ~ U(scale) and rotate by
    U(-degrees, degrees) about the centre (one affine resampling, bilinear, edges reflected)."""

    def __init__(self, scale: tuple[float, float], degrees: float):
        super().__init__()
        self.scale = share_range("scale", scale)
        self.degrees = number("degrees", degrees, 0, 180, "a rotation by U(-degrees, degrees)")

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        k = per_image(x, draws)
        s = uniform(draws.rand(k, device=x.device), *self.scale)
        a = uniform(draws.rand(k, device=x.device), -self.degrees, self.degrees) * math.pi / 180
        cos, sin = torch.cos(a) / s, torch.sin(a) / s  # output -> input coordinates: zoom in when s > 1
        zero = torch.zeros_like(s)
        return _resample(x, torch.stack([cos, -sin, zero, sin, cos, zero], 1), "reflection")


def uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """U[0, 1) draws `u` as U[low, high)."""
    return low + (high - low) * u


def _resample(x: torch.Tensor, theta: torch.Tensor, padding: str) -> torch.Tensor:
    """Bilinear resampling of each view by its own affine map (rows of theta: the 2x3 matrix from
    output to input coordinates in [-1, 1])."""
    grid = F.affine_grid(theta.view(-1, 2, 3).to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


class Crops(Ensemble):
    """MACO's crops: the ensemble's `size` copies of each image, each a square box of it, side ~
    U(box) of the image, centre ~ N(0.5, centre_std) (fractions of the image), resized to the
    image's size (bilinear, zero outside the image: the same samples as torchvision's
    roi_align(aligned=True), 3x faster on the CPU with its backward)."""

    def __init__(self, size: int, box: tuple[float, float], centre_std: float):
        super().__init__(size)
        self.box = share_range("box", box, 1.0, "a crop is a part of the image")
        self.centre_std = number("centre_std", centre_std, 0)

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        x = super().forward(x, draws)
        k = per_image(x, draws)
        offset = draws.randn(k, 2, device=x.device) * (2 * self.centre_std)  # centre - 0.5, in [-1, 1] units
        side = uniform(draws.rand(k, device=x.device), *self.box)
        zero = torch.zeros_like(side)
        return _resample(x, torch.stack([side, zero, offset[:, 0], zero, side, offset[:, 1]], 1), "zeros")


class Noise(nn.Module):
    """MACO's noise: add N(0, std^2) and U(-std/2, std/2) to every pixel of every view (drawn on the
    device: pii.core.draws.Draws.on)."""

    def __init__(self, std: float):
        super().__init__()
        self.std = number("std", std, 0)

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        here, shape = draws.on(x.device), (per_image(x, draws), *x.shape[1:])
        gaussian, flat = here.randn(*shape, device=x.device), here.rand(*shape, device=x.device) - 0.5
        return x + gaussian * self.std + flat * self.std
