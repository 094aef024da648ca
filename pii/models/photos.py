"""Photos every install has: scikit-learn's two sample photos (a Chinese temple, a flower), and their mean
magnitude spectrum, MACO's fixed magnitude under `param.spectrum=photos` (MACO's own, the mean over
ImageNet, is a download)."""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

from pii.core.param import rgb_to_decorrelated

PHOTOS = "photos"  # param.spectrum=photos


@functools.cache  # made once per process: every job of an in-process sweep builds its param
def photo_spectrum(size: int = 224) -> torch.Tensor:
    """The mean |rfft2|, in decorrelated colour, of square crops of the sample photos (3 scales x 3 x 3
    places x a mirror each) at `size` px: a (3, size, size // 2 + 1) magnitude (shared: not to be changed)."""
    from sklearn.datasets import load_sample_images

    crops = []
    for photo in load_sample_images().images:
        x = torch.tensor(photo).permute(2, 0, 1).float() / 255
        height, width = x.shape[-2:]
        for scale in (1.0, 0.7, 0.5):
            side = int(min(height, width) * scale)
            for top in np.linspace(0, height - side, 3).astype(int):
                for left in np.linspace(0, width - side, 3).astype(int):
                    crop = x[None, :, top:top + side, left:left + side]
                    crops.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True))
    x = torch.cat(crops)
    x = rgb_to_decorrelated(torch.cat([x, x.flip(-1)]))
    return torch.fft.rfft2(x).abs().mean(0)
