"""Held-out evaluation of a trained generator (`eval.json`: one entry per model).

  agreement           share of reconstructions whose top-1 class under f is the original's
  retrieval_features  share of images whose reconstruction is nearer (Euclidean, in f's penultimate
                      features) to its own source than to every other image of the same class
  retrieval_pixels    the same in pixels
  psnr, ssim          against the source, mean over images (pixels in [0, 1]; torchmetrics)
  chance              retrieval by chance: mean over images of 1 / M, M = images in its class
Reconstructions use z = 0 (the generator's mean output for a logit vector).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from pii.feedforward.classifier import penultimate

METRICS = ("agreement", "retrieval_features", "retrieval_pixels", "psnr", "ssim", "chance")


@torch.no_grad()
def reconstruct(G: nn.Module, classifier: nn.Module, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
    device = next(G.parameters()).device
    return torch.cat([G(classifier(xb.to(device))).cpu() for xb in x.split(batch_size)])


def retrieval(queries: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of i for which keys[i] is the nearest of all keys with labels[i] to queries[i]."""
    d = torch.cdist(queries.flatten(1).double(), keys.flatten(1).double())
    d[labels[:, None] != labels[None, :]] = float("inf")
    return (d.argmin(1) == torch.arange(len(d))).float().mean().item()


def chance(labels: torch.Tensor) -> float:
    counts = torch.bincount(labels)
    return (1.0 / counts[labels].double()).mean().item()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB (data range 1), capped at 100 dB (an MSE floor of 1e-10) so that an exact
    reconstruction does not make the mean over images infinite."""
    return peak_signal_noise_ratio(a, b, data_range=1.0, reduction="none", dim=(1, 2, 3)).clamp(max=100.0)


SSIM_SIGMA = 1.5  # torchmetrics' Gaussian window: 11 px for this sigma
SSIM_BORDER = 5  # positions nearer the edge than this see torchmetrics' reflected padding


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004) from torchmetrics' SSIM map: 11 px Gaussian window (sigma 1.5),
    per channel, data range 1; averaged over the positions whose window lies inside the image (as
    Wang et al. and skimage do). Images under 11 px have none: their whole map is averaged."""
    _, full = structural_similarity_index_measure(a, b, sigma=SSIM_SIGMA, data_range=1.0, reduction="none",
                                                  return_full_image=True)
    if min(full.shape[-2:]) > 2 * SSIM_BORDER:
        full = full[..., SSIM_BORDER:-SSIM_BORDER, SSIM_BORDER:-SSIM_BORDER]
    return full.flatten(1).mean(1)


@torch.no_grad()
def evaluate(G: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor,
             batch_size: int = 128) -> dict[str, float]:
    """The METRICS of G's reconstructions of held-out images x (labels y)."""
    device = next(G.parameters()).device
    recon = reconstruct(G, classifier, x, batch_size)

    def run(fn, t):
        return torch.cat([fn(tb.to(device)).cpu() for tb in t.split(batch_size)])

    agreement = (run(classifier, recon).argmax(1) == run(classifier, x).argmax(1)).float().mean().item()
    feats_r = run(lambda t: penultimate(classifier, t), recon)
    feats_x = run(lambda t: penultimate(classifier, t), x)
    return {
        "agreement": agreement,
        "retrieval_features": retrieval(feats_r, feats_x, y),
        "retrieval_pixels": retrieval(recon, x, y),
        "psnr": psnr(recon, x).mean().item(),
        "ssim": ssim(recon, x).mean().item(),
        "chance": chance(y),
    }


def table(results: dict[str, dict[str, float]]) -> str:
    """A fixed-width text table: one row per model, one column per metric."""
    head = f"{'model':<10}" + "".join(f"{m:>20}" for m in METRICS)
    rows = [f"{name:<10}" + "".join(f"{r[m]:>20.3f}" for m in METRICS) for name, r in results.items()]
    return "\n".join([head, "-" * len(head), *rows])
