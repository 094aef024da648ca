"""The image is a parametrization (lucent's `param`): an object that owns the
tensors the optimiser changes, renders them as pixels in [0, 1], grows to the
next stage's size and gives / restores its state for checkpoints.

- `pixel`: the pixels themselves, clamped to [0, 1] after every step (the paper).
- `fourier`: lucent's `fft_image`: rfft2 coefficients scaled by 1 / f^decay,
  inverse rfft2, Lucid's decorrelated colour, a sigmoid.
- `maco`: MACO (Fel et al. 2023): only the Fourier phase is learned; the
  magnitude is fixed (a file, the mean of scikit-learn's sample photos, or a
  1 / f^decay law).

Growing between stages is the schedule's (pii.core.schedule.grow): the rendered
image is pasted into a fresh canvas of the new size, then re-expressed in the
param (`encode`). For `pixel` that is the paper's loop exactly; for `fourier`
re-encoding is exact; for `maco` it keeps the phase of the grown image under
the fixed magnitude, an approximation.

Each kind is picked by a file of conf/param/ whose `_target_` names its class
(Hydra's instantiate, in pii.run.build); a new kind is a Param subclass and such
a file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pii.core import schedule
from pii.core.draws import Draws
from pii.core.schedule import Stage
from pii.errors import ConfigError

# Lucid's square root of ImageNet's colour correlation (Olah et al., "Feature Visualization", Distill 2017;
# lucent's port), normalised by its largest column norm.
_COLOR = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOR = _COLOR / _COLOR.norm(dim=0).max()
EPS = 1e-4  # encode: pixels are clamped to [EPS, 1 - EPS] before the logit


class Param:
    """One image per class, `batch` in all. Subclasses hold the tensors; `size` is 0 before the first grow."""

    def __init__(self, batch: int, device: torch.device | str = "cpu"):
        self.batch, self.device, self.size = batch, torch.device(device), 0

    def parameters(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def render(self) -> torch.Tensor:
        """(batch, 3, size, size) pixels in [0, 1], differentiable in `parameters()`."""
        raise NotImplementedError

    def canvas(self, size: int, draws: Draws) -> torch.Tensor:
        """What a fresh param of this kind renders at `size`: the noise a new stage's border starts from,
        each image's from its own stream of `draws`."""
        raise NotImplementedError

    def encode(self, image: torch.Tensor) -> None:
        """Become `image` ((batch, 3, s, s) pixels in [0, 1]) as closely as this param can, at its size."""
        raise NotImplementedError

    def project(self) -> None:
        """After each optimiser step: keep the parameters valid (pixel: clamp to [0, 1])."""

    def grow(self, stage: Stage, draws: Draws) -> None:
        """To `stage`'s size: the current image pasted into a fresh canvas (pii.core.schedule.grow), re-encoded."""
        previous = self.image() if self.size else None
        self.encode(schedule.grow(previous, stage, self.canvas(stage.size, draws)))

    @torch.no_grad()
    def image(self) -> torch.Tensor:
        return self.render().detach()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: t.detach().cpu().clone() for name, t in self._tensors().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, value in state.items():
            setattr(self, name, value.to(self.device).requires_grad_(True))
        self.size = self._size()

    def _tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _size(self) -> int:
        raise NotImplementedError


class Pixel(Param):
    """The pixels are the parameters; a fresh canvas is U[0, 1) noise; clamped after each step."""

    def __init__(self, batch: int, device: torch.device | str = "cpu"):
        super().__init__(batch, device)
        self.pixels = torch.empty(0)

    def parameters(self):
        return [self.pixels]

    def render(self):
        return self.pixels

    def canvas(self, size, draws):
        return draws.rand(1, 3, size, size, device=self.device)

    def encode(self, image):
        self.pixels, self.size = image.detach().clone().requires_grad_(True), image.shape[-1]

    @torch.no_grad()
    def project(self):
        self.pixels.clamp_(0, 1)

    def _tensors(self):
        return {"pixels": self.pixels}

    def _size(self):
        return self.pixels.shape[-1]


def frequencies(size: int) -> torch.Tensor:
    """|f| of each rfft2 coefficient of a size x size image, in cycles per pixel: (size, size // 2 + 1)."""
    fy = torch.fft.fftfreq(size)[:, None]
    fx = torch.fft.rfftfreq(size)[None, :]
    return (fx * fx + fy * fy).sqrt()


def power_law(size: int, decay: float) -> torch.Tensor:
    """lucent's spectrum scale: 1 / max(f, 1 / size)^decay."""
    return 1.0 / frequencies(size).clamp(min=1.0 / size) ** decay


def decorrelated_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Decorrelated colour -> RGB (before the sigmoid): x @ COLOR^T per pixel."""
    return torch.einsum("bchw,dc->bdhw", x, COLOR.to(x))


def rgb_to_decorrelated(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bchw,dc->bdhw", x, torch.linalg.inv(COLOR).to(x))


def logit(image: torch.Tensor) -> torch.Tensor:
    return torch.logit(image.clamp(EPS, 1 - EPS))


class Fourier(Param):
    """lucent's `fft_image` in decorrelated colour: sigmoid(C irfft2(scale * (re + i im)) / 4)."""

    MAGIC = 4.0  # lucent divides the inverse transform by 4

    def __init__(self, batch: int, device: torch.device | str, *, decay: float, sd: float, decorrelate: bool):
        super().__init__(batch, device)
        self.decay, self.sd, self.decorrelate = decay, sd, decorrelate
        self.spectrum = torch.empty(0)  # (batch, 3, size, size // 2 + 1, 2): real and imaginary parts
        self._scales: dict[int, torch.Tensor] = {}

    def parameters(self):
        return [self.spectrum]

    def _scale(self, size):
        if size not in self._scales:  # made once per size, on the device: no copy per step
            self._scales[size] = power_law(size, self.decay).to(self.device)[..., None]
        return self._scales[size]

    def _render(self, spectrum, size):
        x = torch.fft.irfft2(torch.view_as_complex(self._scale(size) * spectrum), s=(size, size), norm="ortho")
        x = x / self.MAGIC
        return torch.sigmoid(decorrelated_to_rgb(x) if self.decorrelate else x)

    def render(self):
        return self._render(self.spectrum, self.size)

    @torch.no_grad()
    def canvas(self, size, draws):
        return self._render(draws.randn(1, 3, size, size // 2 + 1, 2, device=self.device) * self.sd, size)

    @torch.no_grad()
    def encode(self, image):
        size = image.shape[-1]
        x = logit(image.to(self.device).float())
        x = (rgb_to_decorrelated(x) if self.decorrelate else x) * self.MAGIC
        spectrum = torch.view_as_real(torch.fft.rfft2(x, norm="ortho")) / self._scale(size)
        self.spectrum, self.size = spectrum.contiguous().requires_grad_(True), size

    def _tensors(self):
        return {"spectrum": self.spectrum}

    def _size(self):
        return self.spectrum.shape[-3]


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit std per image (MACO's standardize, per item of the batch)."""
    dims = tuple(range(1, x.dim()))
    x = x - x.mean(dims, keepdim=True)
    return x / (x.std(dims, keepdim=True) + 1e-4)


def resize_magnitude(magnitude: torch.Tensor, size: int) -> torch.Tensor:
    """A (3, H, W // 2 + 1) magnitude at another image size: frequencies centred (fftshift on H),
    resized bilinearly with the corners (f = 0 and Nyquist) kept in place, and shifted back."""
    if magnitude.shape[-2] == size and magnitude.shape[-1] == size // 2 + 1:
        return magnitude
    centred = torch.fft.fftshift(magnitude, dim=-2)[None]
    resized = F.interpolate(centred, size=(size, size // 2 + 1), mode="bilinear", align_corners=True)[0]
    return torch.fft.ifftshift(resized, dim=-2)


class Maco(Param):
    """MACO: sigmoid(C standardize(irfft2(r cos(phi) + i r sin(phi)))), r fixed, phi learned.

    Horama standardises phi at every render as well; then a grown image cannot be re-expressed as
    a phase (a standardised angle is another image), so this is `standardize_phase` (off in conf/param/maco.yaml).
    """

    def __init__(self, batch: int, device: torch.device | str, *, decay: float,
                 spectrum: str | torch.Tensor | None, standardize_phase: bool):
        super().__init__(batch, device)
        self.decay, self.standardize_phase = decay, standardize_phase
        # a file, or the magnitude itself (param.spectrum=photos: pii.models.photos, made by the builder)
        self.template = spectrum if isinstance(spectrum, torch.Tensor) else load_spectrum(spectrum) if spectrum else None
        self.phase = torch.empty(0)  # (batch, 3, size, size // 2 + 1)
        self._magnitudes: dict[int, torch.Tensor] = {}

    def magnitude(self, size: int) -> torch.Tensor:
        """The fixed magnitude at `size` px: (3, size, size // 2 + 1), not a parameter."""
        if size not in self._magnitudes:
            if self.template is None:
                r = power_law(size, self.decay).expand(3, -1, -1)
            else:
                r = resize_magnitude(self.template, size)
            self._magnitudes[size] = r.contiguous().to(self.device)
        return self._magnitudes[size]

    def parameters(self):
        return [self.phase]

    def spatial(self, phase: torch.Tensor, size: int) -> torch.Tensor:
        """The standardised image in decorrelated colour, before colour and sigmoid."""
        phi = standardize(phase) if self.standardize_phase else phase
        r = self.magnitude(size)
        return standardize(torch.fft.irfft2(torch.complex(r * torch.cos(phi), r * torch.sin(phi)), s=(size, size)))

    def _render(self, phase, size):
        return torch.sigmoid(decorrelated_to_rgb(self.spatial(phase, size)))

    def render(self):
        return self._render(self.phase, self.size)

    @torch.no_grad()
    def canvas(self, size, draws):
        return self._render(draws.randn(1, 3, size, size // 2 + 1, device=self.device), size)

    @torch.no_grad()
    def encode(self, image):
        x = rgb_to_decorrelated(logit(image.to(self.device).float()))
        self.phase = torch.fft.rfft2(x).angle().contiguous().requires_grad_(True)
        self.size = image.shape[-1]

    def _tensors(self):
        return {"phase": self.phase}

    def _size(self):
        return self.phase.shape[-2]


def load_spectrum(path: str) -> torch.Tensor:
    """A magnitude spectrum file in MACO's format: a (3, H, W // 2 + 1) float array (.npy)."""
    file = Path(str(path)).expanduser()
    if not file.is_file():
        raise ConfigError(f"param.spectrum={path}: no such file; pass a .npy magnitude spectrum of shape "
                          f"(3, H, W//2+1) (MACO's ImageNet spectrum), param.spectrum=photos for the mean of scikit-learn's "
                          f"sample photos, or param.spectrum=null for a 1/f^decay law")
    with open(file, "rb") as f:
        magic = f.read(len(np.lib.format.MAGIC_PREFIX))
    if magic != np.lib.format.MAGIC_PREFIX:  # text, an .npz archive, a pickle (which np.load would try to read)
        raise ConfigError(f"param.spectrum={path} is not a .npy file; pass a .npy magnitude spectrum of shape "
                          f"(3, H, W//2+1) (numpy.save)")
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # an object array (refused unread), a truncated file
        raise ConfigError(f"param.spectrum={path} cannot be read ({one_line_reason(err)}); pass a .npy "
                          f"magnitude spectrum of shape (3, H, W//2+1)") from None
    if array.ndim != 3 or array.shape[0] != 3 or array.shape[2] != array.shape[1] // 2 + 1:
        raise ConfigError(f"param.spectrum={path}: shape {array.shape} is not (3, H, H//2+1)")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ConfigError(f"param.spectrum={path} holds {array.dtype} values, not magnitudes (numbers)")
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all() or (array < 0).any():
        raise ConfigError(f"param.spectrum={path} holds nan, inf or negative values; a magnitude spectrum is finite and >= 0")
    return torch.from_numpy(array)


def one_line_reason(err: Exception) -> str:
    return str(err).splitlines()[0][:100] if str(err) else type(err).__name__
