"""Image-grid analyses of a trained generator (the feedforward inversion paper's Section 4):

  reconstructions  originals (top row) over their reconstructions, per model
  noise            per image: original, z=0 reconstruction, then random noise draws
  edits            per image: original, reconstruction, and reconstructions of edited logits:
                   scaled x0.5, scaled x2, shifted (+2 std on every logit), noised (+1 std of
                   Gaussian noise), top-2 classes swapped
  misclassified    held-out images the classifier gets wrong (top row) over their reconstructions
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn
from torchvision.utils import make_grid

from pii.feedforward.evaluate import reconstruct
from pii.run.outputs import save_png

log = logging.getLogger(__name__)

ANALYSES = ("reconstructions", "noise", "edits", "misclassified")
EDITS = ("scaled x0.5", "scaled x2", "shifted", "noised", "swapped top-2")


def _save(rows: list[torch.Tensor], path: Path) -> Path:
    """Rows of equal length, stacked; one image per cell."""
    images = torch.cat([r.cpu().float() for r in rows])
    save_png(make_grid(images, nrow=len(rows[0]), padding=2, pad_value=1.0), path)
    return path


def reconstructions(generators: dict[str, nn.Module], classifier: nn.Module, x: torch.Tensor, path: Path) -> Path:
    """Row 1: originals; then one row per model (in the order given)."""
    return _save([x] + [reconstruct(G, classifier, x) for G in generators.values()], path)


@torch.no_grad()
def noise(G: nn.Module, classifier: nn.Module, x: torch.Tensor, path: Path, draws: int = 7, seed: int = 0) -> Path:
    device = next(G.parameters()).device
    logits = classifier(x.to(device))
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(len(x)):
        l = logits[i:i + 1].expand(draws, -1)
        z = G.sample_z(draws, g)
        rows.append(torch.cat([x[i:i + 1].to(device), G(logits[i:i + 1]), G(l, z)]))
    return _save(rows, path)


def edit(logits: torch.Tensor, kind: str, std: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One of EDITS applied to raw logits [N, K]; `std`: per-logit spread on the training set."""
    if kind == "scaled x0.5":
        return logits * 0.5
    if kind == "scaled x2":
        return logits * 2
    if kind == "shifted":
        return logits + 2 * std
    if kind == "noised":
        return logits + std * torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed)).to(logits)
    if kind == "swapped top-2":
        top = logits.topk(2, dim=1).indices
        out = logits.clone()
        rows = torch.arange(len(logits))
        out[rows, top[:, 0]], out[rows, top[:, 1]] = logits[rows, top[:, 1]], logits[rows, top[:, 0]]
        return out
    raise ValueError(f"unknown edit {kind!r}; one of {EDITS}")


@torch.no_grad()
def edits(G: nn.Module, classifier: nn.Module, x: torch.Tensor, std: torch.Tensor, path: Path) -> Path:
    """One row per image: original, reconstruction, then one column per edit in EDITS."""
    device = next(G.parameters()).device
    logits = classifier(x.to(device))
    cols = [x.to(device), G(logits)] + [G(edit(logits, kind, std.to(device))) for kind in EDITS]
    rows = [torch.stack([c[i] for c in cols]) for i in range(len(x))]
    return _save(rows, path)


@torch.no_grad()
def misclassified(G: nn.Module, classifier: nn.Module, x: torch.Tensor, y: torch.Tensor, path: Path,
                  limit: int = 8) -> tuple[Path | None, list[dict]]:
    """Held-out images whose top-1 class is wrong, over their reconstructions; and what f says of each."""
    device = next(G.parameters()).device
    pred = torch.cat([classifier(xb.to(device)).argmax(1).cpu() for xb in x.split(128)])
    wrong = (pred != y).nonzero().flatten()[:limit]
    if len(wrong) == 0:
        log.info("no misclassified held-out images: %s not written", path.name)
        return None, []
    xs = x[wrong]
    recon = reconstruct(G, classifier, xs)
    recon_pred = classifier(recon.to(device)).argmax(1).cpu()
    info = [{"index": int(i), "label": int(y[i]), "predicted": int(pred[i]), "reconstruction_predicted": int(r)}
            for i, r in zip(wrong, recon_pred)]
    return _save([xs, recon], path), info
