"""Judged quality (SPEC section 4): how often a model that was NOT inverted
puts an inversion in its target class, top-1 and top-5.

`cfg.verifier` maps a judge's name to a model config (the keys of
conf/model/timm.yaml), so any model `pii.models.build` can make is a judge.
Every judge sees the images resized (bilinear, antialiased) to its own
`input_size`: EfficientNet-Lite2 was trained and is evaluated at 260 px, and a
224 px inversion shown at 224 px would show it objects smaller than it knows.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from pii import models
from pii.errors import ConfigError
from pii.models import Classifier
from pii.outputs import load_png

log = logging.getLogger(__name__)

# What pii/outputs.py writes for each class: `<class_id>_<slug>.png`.
INVERSION_PNG = re.compile(r"^(\d+)_[a-z0-9-]*\.png$")
JUDGE_JSON = "judge.json"


def build_judges(verifier: DictConfig | None, device: torch.device | str = "cpu") -> dict[str, Classifier]:
    """One frozen classifier per entry of `cfg.verifier`; none for `verifier=none`."""
    if not verifier:
        return {}
    return {str(name): models.build(model_cfg, device) for name, model_cfg in verifier.items()}


@torch.no_grad()
def judge(classifier: Classifier, images: torch.Tensor, class_ids: list[int], batch_size: int = 32) -> dict:
    """Per class the judge's probability for the target, top-1 and top-5 hits; overall accuracy."""
    from pii.runner import class_report  # runner imports this module: import here, not at the top

    bad = [c for c in class_ids if not 0 <= c < classifier.num_classes]
    if bad:
        raise ConfigError(f"judge {classifier.name} has {classifier.num_classes} classes; "
                          f"class ids {bad} are outside them (pick a judge for this label set with verifier=...)")
    device = next(classifier.buffers()).device
    report = []
    for start in range(0, len(class_ids), batch_size):
        batch = resize(images[start:start + batch_size].to(device=device, dtype=torch.float32), classifier.input_size)
        report += class_report(classifier, batch, class_ids[start:start + batch_size])
    classes = [{
        "class_id": e["class_id"],
        "name": e["name"],
        "probability": e["probability"],
        "top1": e["top1"],
        "top5": any(t["class_id"] == e["class_id"] for t in e["top5"]),
        "prediction": e["top5"][0]["class_id"],
        "prediction_name": e["top5"][0]["name"],
    } for e in report]
    return {**summary(classifier, classes), "classes": classes}


def summary(classifier: Classifier, classes: list[dict]) -> dict:
    """A judge's overall top-1 / top-5 accuracy and mean target probability over judged classes."""
    n = len(classes)
    return {
        "model": classifier.name,
        "input_size": classifier.input_size,
        "images": n,
        "top1": sum(c["top1"] for c in classes) / n,
        "top5": sum(c["top5"] for c in classes) / n,
        "mean_probability": sum(c["probability"] for c in classes) / n,
    }


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images at the judge's own input size (bilinear, antialiased); unchanged when they already are."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def judge_run(verifier: DictConfig | None, image: torch.Tensor, class_ids: list[int], num_classes: int,
              device: torch.device | str = "cpu") -> dict[str, dict]:
    """After an invert.py run: judge the final images with every judge that shares the model's label set."""
    results = {}
    for name, model_cfg in (verifier or {}).items():
        if int(model_cfg.num_classes) != num_classes:  # before loading its weights
            log.warning("judge %s has %d classes, the inverted model %d: skipped", name, model_cfg.num_classes,
                        num_classes)
            continue
        results[name] = judge(models.build(model_cfg, device), image, class_ids)
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
    for path, cid in find_inversions(root):
        try:
            image = load_png(path)
        except ConfigError as err:  # one damaged file costs its own verdict, not the others'
            log.warning("skipped: %s", err)
            continue
        inversions.setdefault(path.parent, []).append((path, cid, image))
    if not inversions:
        raise ConfigError(f"none of the inversions under {str(root)!r} could be read")
    return inversions


def judge_directory(root: Path, judges: dict[str, Classifier], inversions: Inversions | None = None) -> dict:
    """Judge every inversion under `root` (read by `read_inversions` unless given); per run directory and overall."""
    root = Path(root)
    by_dir = inversions if inversions is not None else read_inversions(root)
    results: dict = {"root": str(root), "runs": {}, "overall": {}}
    for name, clf in judges.items():
        all_classes = []
        for run_dir, items in by_dir.items():
            # resize one by one: a multirun may mix image sizes
            batch = torch.stack([resize(im[None], clf.input_size)[0] for _, _, im in items])
            result = judge(clf, batch, [cid for _, cid, _ in items])
            for entry, (path, _, _) in zip(result["classes"], items):
                entry["image"] = str(path.relative_to(root))
            results["runs"].setdefault(str(run_dir.relative_to(root)), {})[name] = result
            all_classes += result["classes"]
        results["overall"][name] = summary(clf, all_classes)
    (root / JUDGE_JSON).write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_table(result: dict) -> str:
    """A judge's per class table and its overall line, for the console and the README."""
    lines = [f"{'class':>5}  {'name':<24} {'p(target)':>9}  top1  top5  judged as"]
    for c in result["classes"]:
        lines.append(f"{c['class_id']:>5}  {c['name'][:24]:<24} {c['probability']:>9.3f}  "
                     f"{'yes' if c['top1'] else 'no':<4}  {'yes' if c['top5'] else 'no':<4}  "
                     f"{c['prediction']} {c['prediction_name']}")
    lines.append(f"{result['model']} judged {result['images']} images: top-1 {result['top1']:.1%}, "
                 f"top-5 {result['top5']:.1%}, mean p(target) {result['mean_probability']:.3f}")
    return "\n".join(lines)

