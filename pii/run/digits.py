"""The architecture claim at small scale, on data that ships offline.

sklearn's 8x8 digits, upscaled to 32 px and 3 channels, train a small CNN, ViT
and MLP-Mixer (conf/model/digits_*.yaml) and, apart, a judge (another
architecture, seed and heavier augmentation). Each model's 10 classes are then
inverted with the same settings for every architecture, once per method, and
the judge scores the inversions.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from pii import models
from pii.errors import ConfigError
from pii.files import write_json
from pii.models.digits import digits_split, train
from pii.models.robust import PGD
from pii.models.training import accuracy
from pii.run.compose import compose
from pii.run.config import options
from pii.run.outputs import save_checkpoint

log = logging.getLogger(__name__)

ARCHITECTURES = {"cnn": "digits_cnn", "vit": "digits_vit", "mixer": "digits_mixer"}
JUDGE = "judge"

# The methods, each a preset of conf/experiment/digits/ (the same settings for every architecture):
# method name -> the `experiment` option that composes it.
METHODS = {name: f"digits/{name}" for name in options("experiment/digits")}
CLAIM_METHODS = ("pii", "pii_no_color_shift", "plain_ce")  # the paper's claim: digits_claim.py's default
# Each model's training epochs (robust_claim.py trains the robust versions with the same)
EPOCHS = {"cnn": 10, "vit": 20, "mixer": 10, JUDGE: 10}


def scaled_epochs(scale: float) -> dict[str, int]:
    """EPOCHS times `scale` (the scripts' --epochs), at least one each."""
    return {short: max(1, round(epochs * scale)) for short, epochs in EPOCHS.items()}


def chosen(option: str, value: str, choices: dict) -> dict:
    """The entries of `choices` (METHODS, ARCHITECTURES) named by the comma-separated `value` of a
    script's `option`; ConfigError names any unknown."""
    names = value.split(",")
    unknown = sorted(set(names) - set(choices))
    if unknown:
        raise ConfigError(f"{option}: unknown {', '.join(unknown)}; choose from {', '.join(choices)}")
    return {name: choices[name] for name in names}


def model_config(model: str, weights: str) -> DictConfig:
    """The `model` group's `model` with `weights` (random: untrained, to train here; else a file)."""
    return compose([f"model={model}", f"model.weights={weights}"]).model


def train_all(out_dir: Path, epochs: dict[str, int], seed: int = 0, which: list[str] | None = None, *,
              robust: str) -> dict[str, float]:
    """Train the three architectures and the judge (or those in `which`); save state_dicts as
    <out_dir>/<short>.pt; return their test accuracies. `robust`: an option of conf/robust/; other
    than none, the architectures are trained adversarially, with the same settings otherwise, and
    saved as <out_dir>/<short><robust.tag>.pt (the judge is natural only).

    All are trained with random shifts and a random per-channel gain and offset:
    models trained on clean grey digits only are not robust to colour or shift,
    and their inversions stay noise under any method (as a first training on clean digits showed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (x_train, y_train), (x_test, y_test) = digits_split()
    accuracies = {}
    robust_cfg = compose([f"robust={robust}"]).robust
    attack = PGD.training(robust_cfg)
    for short, (name, model_seed, shift, colour) in recipes(seed).items():
        if (which and short not in which) or (attack and short == JUDGE):
            continue
        clf = train(model_config(name, "random"), x_train, y_train, epochs[short], model_seed, shift=shift,
                    colour=colour, attack=attack)
        path = out_dir / f"{short}{robust_cfg.tag}.pt"
        save_checkpoint(path, clf.net.state_dict())
        accuracies[short] = accuracy(clf, x_test, y_test)
        write_json(path.with_suffix(".json"), {"settings": shaping_settings(short, epochs, seed, attack),
                                               "test_accuracy": accuracies[short]})
        log.info("%s: test accuracy %.3f -> %s", short, accuracies[short], path)
    return accuracies


def recipes(seed: int = 0) -> dict[str, tuple[str, int, int, float]]:
    """Per model: (model config, seed, shift in px, colour jitter) of its training."""
    table = {short: (name, seed, 2, 0.5) for short, name in ARCHITECTURES.items()}
    table[JUDGE] = ("digits_judge", seed + 1000, 3, 0.5)  # apart: other architecture, seed, shifts
    return table


def shaping_settings(short: str, epochs: dict[str, int], seed: int, attack: PGD | None) -> dict:
    """Everything that shapes a digits model's weights, recorded beside its file (<file>.json)."""
    name, model_seed, shift, colour = recipes(seed)[short]
    return {"model": name, "epochs": epochs[short], "seed": model_seed, "shift": shift, "colour": colour,
            "robust": vars(attack) if attack else None}


def is_trained(out_dir: Path, short: str, epochs: dict[str, int], seed: int = 0, *, robust: str) -> bool:
    """Whether <out_dir> holds `short`'s file (robust: the one its tag names) with a record of the same
    settings: the cache test of a script that trains only what it lacks (robust_claim.py)."""
    robust_cfg = compose([f"robust={robust}"]).robust
    record = Path(out_dir) / f"{short}{robust_cfg.tag}.json"
    if not record.with_suffix(".pt").is_file() or not record.is_file():
        return False
    return json.loads(record.read_text()).get("settings") == shaping_settings(short, epochs, seed,
                                                                              PGD.training(robust_cfg))


def test_accuracies(out_dir: Path) -> dict[str, float]:
    """Held-out accuracy of the saved checkpoints (the same split train_all trained on)."""
    _, (x_test, y_test) = digits_split()
    names = {**ARCHITECTURES, JUDGE: "digits_judge"}
    return {short: accuracy(models.build(model_config(name, str(Path(out_dir) / f"{short}.pt")), "cpu", **models.PLAIN),
                            x_test, y_test)
            for short, name in names.items()}


def invert_all(out_dir: Path, overrides: list[str] = (), methods: dict[str, str] = METHODS,
               architectures: dict[str, str] = ARCHITECTURES, *, robust: str) -> dict[str, dict[str, dict]]:
    """Invert digits 0-9 of every architecture with every method (name -> its experiment preset);
    judged metrics per (architecture, method). `robust`: which version of each architecture
    (train_all's), its runs in runs/<short><robust.tag>/."""
    from pii.run.runner import run

    out_dir = Path(out_dir)
    tag = compose([f"robust={robust}"]).robust.tag
    results: dict[str, dict[str, dict]] = {}
    for short, name in architectures.items():
        for method, preset in methods.items():
            cfg = compose([
                f"experiment={preset}", f"model={name}", f"robust={robust}",
                f"model.weights={out_dir / (short + tag + '.pt')}",
                "verifier=digits_judge", f"verifier.digits_judge.weights={out_dir / (JUDGE + '.pt')}",
                "class_id=[0,1,2,3,4,5,6,7,8,9]", "device=cpu",
                f"output_dir={out_dir / 'runs' / (short + tag) / method}", *overrides])
            result = run(cfg)
            judged = result.judge["digits_judge"]
            results.setdefault(short, {})[method] = {
                "judge_top1": judged.top1,
                "judge_mean_probability": judged.mean_probability,
                "model_probability": result.mean_probability,
                "model_start_probability": sum(c.start_probability for c in result.classes) / 10,
                "spectral_slope": result.spectral_slope,
                "seconds": result.seconds,
            }
            log.info("%s / %s: judged top-1 %.0f%%", short, method, 100 * judged.top1)
    return results


def format_table(results: dict[str, dict[str, dict]], accuracies: dict[str, float] | None = None) -> str:
    """Markdown: architecture x method, the judge's top-1 accuracy over the 10 digit classes."""
    methods = list(next(iter(results.values())))
    head = "| architecture | " + ("test acc. | " if accuracies else "") + " | ".join(methods) + " |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for short, by_method in results.items():
        acc = f"{accuracies[short]:.3f} | " if accuracies else ""
        cells = " | ".join(f"{100 * by_method[m]['judge_top1']:.0f}% (p {by_method[m]['judge_mean_probability']:.2f})"
                           for m in methods)
        lines.append(f"| {short} | {acc}{cells} |")
    return "\n".join(lines)
