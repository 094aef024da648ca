"""Judged quality: how often a model that was NOT inverted
puts an inversion in its target class, top-1 and top-5.

`cfg.verifier` maps a judge's name to a model config (the keys of
conf/model/timm.yaml), so any model `pii.models.build` can make is a judge.
Every judge sees the images resized (bilinear, antialiased) to its own
`input_size`: EfficientNet-Lite2 was trained and is evaluated at 260 px, and a
224 px inversion shown at 224 px would show it objects smaller than it knows.
"""

from __future__ import annotations

import logging
from collections import defaultdict
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pii import models
from pii.errors import ConfigError, few
from pii.eval.results import (
    ClassResult,
    JudgedDirectory,
    JudgeResult,
    JudgeSummary,
    TopClass,
    Verdict,
    nan_if_none,
    to_json,
)
from pii.files import read_png, write_text
from pii.models import Classifier
from pii.models.classes import class_name

log = logging.getLogger(__name__)

# What pii/run/outputs.py writes for each class: `<class_id>_<slug>.png`, or `<class_id>_<slug>_<k>.png`
# for the k-th of several images of a class (pii.eval.results.image_names).
INVERSION_PNG = re.compile(r"^(\d+)_[a-z0-9-]*(?:_\d+)?\.png$")
JUDGE_JSON = "judge.json"


def build_judges(verifier: DictConfig | None, device: torch.device | str = "cpu",
                 num_classes: int | None = None) -> dict[str, Classifier]:
    """One frozen classifier per entry of `cfg.verifier`; none for `verifier=none`. With `num_classes`
    (an inverted model's), a judge of another label set is skipped with a warning, before it loads."""
    judges = {}
    for name, model_cfg in (verifier or {}).items():
        if num_classes is not None and int(model_cfg.num_classes) != num_classes:
            log.warning("judge %s has %d classes, the inverted model %d: skipped", name, model_cfg.num_classes,
                        num_classes)
            continue
        judges[str(name)] = models.build(model_cfg, device, **models.PLAIN, key=f"verifier.{name}")
    return judges


def spectral_slope(image: torch.Tensor) -> float:
    """Naturalness: the slope of the image's radially averaged power spectrum, a least-squares line
    in log power vs log frequency. Photographs sit near -2 (to -2.5), white noise at 0.

    The image (3, H, W) in [0, 1] is averaged over channels, its mean removed, a Hann window applied
    (so the jump between opposite edges adds no power of its own); the power |fft2|^2 is averaged
    over rings of integer radius 1 .. min(H, W) / 2 (cycles per image, DC left out)."""
    gray = image.detach().float().cpu().mean(0)
    h, w = gray.shape
    gray = (gray - gray.mean()) * torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)
    power = torch.fft.fft2(gray).abs().square()
    fy, fx = torch.fft.fftfreq(h)[:, None] * h, torch.fft.fftfreq(w)[None, :] * w
    radius = (fx.square() + fy.square()).sqrt().round().long().flatten()
    keep = (radius >= 1) & (radius <= min(h, w) // 2)
    sums = torch.zeros(int(radius.max()) + 1, dtype=torch.float64).index_add_(0, radius[keep], power.flatten()[keep].double())
    counts = torch.zeros_like(sums).index_add_(0, radius[keep], torch.ones(int(keep.sum()), dtype=torch.float64))
    rings = torch.arange(len(sums))[counts > 0]
    x, y = rings.double().log(), (sums[rings] / counts[rings]).clamp(min=1e-30).log()
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / x.square().sum())


@torch.no_grad()
def class_report(classifier: Classifier, image: torch.Tensor, class_ids: list[int],
                 top: int = 5) -> list[ClassResult]:
    """Per class: the classifier's probability for the target, and its top classes."""
    probs = classifier(image).softmax(-1).cpu()
    n = classifier.num_classes
    report = []
    for row, cid in zip(probs, class_ids):
        values, indices = row.topk(min(top, n))
        report.append(ClassResult(
            class_id=cid,
            name=class_name(cid, n),
            probability=row[cid].item(),
            top1=indices[0].item() == cid,
            top5_classes=[TopClass(i, class_name(i, n), v) for v, i in zip(values.tolist(), indices.tolist())],
        ))
    return report


@torch.no_grad()
def judge(classifier: Classifier, images: torch.Tensor, class_ids: list[int], batch_size: int = 32,
          slopes: list[float] | None = None) -> JudgeResult:
    """Per class the judge's probability for the target, top-1 and top-5 hits; overall accuracy.
    Beside them each image's spectral slope (`slopes`: given, or measured on `images`)."""
    check_class_ids(classifier, class_ids)
    device = next(classifier.buffers()).device
    slopes = slopes if slopes is not None else [spectral_slope(im) for im in images]
    report, feats = [], []
    several = len(set(class_ids)) < len(class_ids)  # several images of a class: how far apart they are, too
    for start in range(0, len(class_ids), batch_size):
        batch = resize(images[start:start + batch_size].to(device=device, dtype=torch.float32), classifier.input_size)
        report += class_report(classifier, batch, class_ids[start:start + batch_size])
        if several:
            feats.append(features(classifier, batch))
    classes = [Verdict(
        class_id=e.class_id,
        name=e.name,
        probability=e.probability,
        top1=e.top1,
        top5=any(t.class_id == e.class_id for t in e.top5_classes),
        prediction=e.top5_classes[0].class_id,
        prediction_name=e.top5_classes[0].name,
        spectral_slope=slope,
    ) for e, slope in zip(report, slopes)]
    figures = summary(classifier, classes)
    figures.diversity = diversity(torch.cat(feats), class_ids) if several else None
    return JudgeResult(**vars(figures), classes=classes)


@torch.no_grad()
def features(classifier: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """(images, features): what a timm classifier's head takes."""
    net = getattr(classifier.net, "_orig_mod", classifier.net)
    seen = []
    handle = net.get_classifier().register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(1).float()))
    try:
        classifier(images, eager=True)
    finally:
        handle.remove()
    return seen[-1]


def diversity(feats: torch.Tensor, targets: list[int]) -> float | None:
    """The mean over targets (classes or units) with several images of their images' mean pairwise
    Euclidean distance in `feats` (pii.eval.judge.features); None when no target has several."""
    groups = defaultdict(list)
    for i, target in enumerate(targets):
        groups[target].append(i)
    spreads = []
    for members in groups.values():
        if len(members) > 1:
            d = torch.cdist(feats[members], feats[members])
            spreads.append(d.sum() / (len(members) * (len(members) - 1)))
    return float(torch.stack(spreads).mean()) if spreads else None


def check_class_ids(classifier: Classifier, class_ids) -> None:
    """ConfigError naming (a few of) the class ids outside the judge's classes."""
    bad = sorted({c for c in class_ids if not 0 <= c < classifier.num_classes})
    if bad:
        raise ConfigError(f"judge {classifier.name} has {classifier.num_classes} classes; {len(bad)} class ids "
                          f"are outside them: {few(bad)} (pick a judge for this label set with verifier=...)")


def summary(classifier: Classifier, classes: list[Verdict]) -> JudgeSummary:
    """A judge's overall top-1 / top-5 accuracy and mean target probability over judged classes."""
    return JudgeSummary.of(classifier.name, classifier.input_size, classes)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images at the judge's own input size (bilinear, antialiased); unchanged when they already are."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def judge_run(judges: dict[str, Classifier], image: torch.Tensor, class_ids: list[int],
              slopes: list[float] | None = None) -> dict[str, JudgeResult]:
    """After an invert.py run: judge the final images with its judges (build_judges, loaded before the
    inversion so that one that cannot load costs no inversion; `slopes`: the images' spectral slopes,
    when the run has measured them)."""
    results = {}
    for name, classifier in judges.items():
        results[name] = judge(classifier, image, class_ids, slopes=slopes)
        for line in format_table(results[name]).splitlines():
            log.info("judge %s: %s", name, line)
    return results


def find_inversions(root: Path) -> list[tuple[Path, int]]:
    """Every `<class_id>_<slug>.png` under `root` (recursively: a run or a multirun directory)."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{str(root)!r} is not a directory of inversions (an invert.py output or multirun directory)")
    found = sorted((p, int(m.group(1))) for p in root.rglob("*.png") if (m := INVERSION_PNG.match(p.name)))
    if not found:
        raise ConfigError(f"no inversions (<class_id>_<name>.png files) under {str(root)!r}")
    return found


Inversions = dict[Path, list[tuple[Path, int, torch.Tensor]]]


def read_inversions(root: Path) -> Inversions:
    """Every readable inversion under `root`, by run directory: (path, class id, image).
    A damaged file is skipped with one warning; ConfigError if none can be read."""
    inversions: Inversions = {}
    damaged = []
    for path, cid in find_inversions(root):
        try:
            image = read_png(path)
        except ConfigError as err:  # one damaged file costs its own verdict, not the others'
            damaged.append(str(err))
            continue
        inversions.setdefault(path.parent, []).append((path, cid, image))
    if not inversions:  # one line that says why, not a warning before it
        why = f" ({few(damaged, 1)})" if damaged else ""
        raise ConfigError(f"none of the inversions under {str(root)!r} could be read{why}")
    if damaged:
        log.warning("skipped %s: %s", f"{len(damaged)} images" if len(damaged) > 1 else "an image", few(damaged, 2))
    return inversions


def judge_directory(root: Path, judges: dict[str, Classifier], inversions: Inversions | None = None) -> JudgedDirectory:
    """Judge every inversion under `root` (read by `read_inversions` unless given); per run directory and
    overall; written to `root`/judge.json."""
    root = Path(root)
    by_dir = inversions if inversions is not None else read_inversions(root)
    for clf in judges.values():  # before anything is resized or judged
        check_class_ids(clf, [cid for items in by_dir.values() for _, cid, _ in items])
    slopes = {run_dir: [spectral_slope(im) for _, _, im in items] for run_dir, items in by_dir.items()}  # at saved size
    results = JudgedDirectory(str(root))
    for name, clf in judges.items():
        all_classes = []
        for run_dir, items in by_dir.items():
            # resize one by one: a multirun may mix image sizes
            batch = torch.stack([resize(im[None], clf.input_size)[0] for _, _, im in items])
            result = judge(clf, batch, [cid for _, cid, _ in items], slopes=slopes[run_dir])
            for entry, (path, _, _) in zip(result.classes, items):
                entry.image = str(path.relative_to(root))
            results.runs.setdefault(str(run_dir.relative_to(root)), {})[name] = result
            all_classes += result.classes
        results.overall[name] = summary(clf, all_classes)
    write_text(root / JUDGE_JSON, to_json(results))
    return results


def format_table(result: JudgeResult) -> str:
    """A judge's per class table and its overall line, for the console and the README."""
    lines = [f"{'class':>5}  {'name':<24} {'p(target)':>9}  top1  top5  slope  judged as"]
    for c in result.classes:
        lines.append(f"{c.class_id:>5}  {c.name[:24]:<24} {c.probability:>9.3f}  "
                     f"{'yes' if c.top1 else 'no':<4}  {'yes' if c.top5 else 'no':<4}  "
                     f"{nan_if_none(c.spectral_slope):>5.2f}  {c.prediction} {c.prediction_name}")
    lines.append(f"{result.model} judged {result.images} images: top-1 {result.top1:.1%}, "
                 f"top-5 {result.top5:.1%}, mean p(target) {result.mean_probability:.3f}, "
                 f"spectral slope {nan_if_none(result.spectral_slope):.2f} (photos ~ -2 to -2.5)"
                 + ("" if result.diversity is None else f", diversity {result.diversity:.2f} (mean feature distance "
                    "between the images of one class)"))
    return "\n".join(lines)

