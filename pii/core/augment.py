"""The augmentations of PII (paper Section 3), and the pieces lucent's and MACO's
recipes add: small pieces with one signature, `views = piece(views, draws)`,
composed in order. Each is drawn afresh at every call, every image's from its own
stream (pii.core.draws): before the ensemble `views` holds one row per image,
after it image i's copies are rows i * k .. (i + 1) * k - 1."""

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


class Augmentation(nn.Sequential):
    """The pieces in order: `views = augmentation(images, draws)`."""

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        for piece in self:
            x = piece(x, draws)
        return x


class Jitter(nn.Module):
    """Roll each image by its own random offset in [-max_shift, max_shift] per axis, wrapping around
    (for one image: the paper's jitter)."""

    def __init__(self, max_shift: int):
        super().__init__()
        self.max_shift = max_shift

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        return each_offset(x, draws, -self.max_shift, self.max_shift + 1,
                           lambda rows, dy, dx: torch.roll(rows, shifts=(dy, dx), dims=(-2, -1)))


class Ensemble(nn.Module):
    """Repeat each image `size` times, copies of one image next to each other."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        return x.repeat_interleave(self.size, dim=0)


class Flip(nn.Module):
    """Mirror each copy left-right with probability p."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        flip = draws.rand(per_image(x, draws), 1, 1, 1, device=x.device) < self.p
        return torch.where(flip, x.flip(-1), x)


class ColorShift(nn.Module):
    """x' = sigma * x + mu per copy and channel, mu ~ U(-alpha, alpha), sigma = exp(U(-beta, beta)).

    Applied to [0, 1] pixels before the model's normalisation, and not clamped.
    """

    def __init__(self, alpha: float, beta: float):
        super().__init__()
        self.alpha, self.beta = alpha, beta

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        shape = (per_image(x, draws), x.shape[1], 1, 1)
        mu = (draws.rand(*shape, device=x.device) * 2 - 1) * self.alpha
        sigma = torch.exp((draws.rand(*shape, device=x.device) * 2 - 1) * self.beta)
        return sigma * x + mu


class Pad(nn.Module):
    """lucent's pad: a constant border (grey by default) of `pixels` px on every side."""

    def __init__(self, pixels: int, value: float = 0.5):
        super().__init__()
        self.pixels, self.value = pixels, value

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        return F.pad(x, (self.pixels,) * 4, mode="constant", value=self.value)


class Shift(nn.Module):
    """lucent's jitter: a random crop `pixels` px smaller in each axis (no wrap-around), one offset per image."""

    def __init__(self, pixels: int):
        super().__init__()
        self.pixels = pixels

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        h, w = x.shape[-2] - self.pixels, x.shape[-1] - self.pixels
        return each_offset(x, draws, 0, self.pixels + 1, lambda rows, dy, dx: rows[..., dy:dy + h, dx:dx + w])


class ScaleRotate(nn.Module):
    """lucent's random scale and rotation, drawn per copy: zoom by s ~ U(scale) and rotate by
    U(-degrees, degrees) about the centre (one affine resampling, bilinear, edges reflected)."""

    def __init__(self, scale: tuple[float, float], degrees: float):
        super().__init__()
        self.scale, self.degrees = scale, degrees

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
    """MACO's crops: the ensemble's `count` copies of each image, each a square box of it, side ~
    U(box) of the image, centre ~ N(0.5, centre_std) (fractions of the image), resized to the
    image's size (bilinear, zero outside the image: the same samples as torchvision's
    roi_align(aligned=True), 3x faster on the CPU with its backward)."""

    def __init__(self, count: int, box: tuple[float, float], centre_std: float):
        super().__init__(count)
        self.box, self.centre_std = box, centre_std

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
        self.std = std

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        here, shape = draws.on(x.device), (per_image(x, draws), *x.shape[1:])
        gaussian, flat = here.randn(*shape, device=x.device), here.rand(*shape, device=x.device) - 0.5
        return x + gaussian * self.std + flat * self.std


def _pair(value) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)  # 0 < lo <= hi: pii.run.config.check_invert
    return lo, hi


def build(*, jitter: int, flip: bool, ensemble_size: int, color_shift: bool, alpha: float, beta: float, pad: int,
          shift: int, crops: tuple[float, float] | None, crop_centre_std: float, scale: tuple[float, float] | None,
          degrees: float, noise: float) -> Augmentation:
    """Each piece switchable, in one order: pad, shift, jitter, ensemble (or crops), scale and
    rotation, flip, ColorShift, noise. The paper's set is jitter, ensemble, ColorShift. The
    arguments are the `augmentation` config group's keys (conf/augmentation/pii.yaml: what each does)."""
    pieces: list[nn.Module] = []
    if pad > 0:
        pieces.append(Pad(int(pad)))
    if shift > 0:
        pieces.append(Shift(int(shift)))
    if jitter > 0:
        pieces.append(Jitter(int(jitter)))
    if crops:
        pieces.append(Crops(int(ensemble_size), _pair(crops), float(crop_centre_std)))
    else:
        pieces.append(Ensemble(int(ensemble_size)))
    if scale or degrees:
        pieces.append(ScaleRotate(_pair(scale or [1, 1]), float(degrees)))
    if flip:
        pieces.append(Flip())
    if color_shift and (alpha > 0 or beta > 0):
        pieces.append(ColorShift(float(alpha), float(beta)))
    if noise > 0:
        pieces.append(Noise(float(noise)))
    return Augmentation(*pieces)
