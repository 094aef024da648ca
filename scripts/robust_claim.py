"""Robust against natural classifiers at the digits scale: both papers' robustness claims, measured
with the same settings on both sides.

    python scripts/robust_claim.py --robust linf                  # all parts, default budgets
    python scripts/robust_claim.py --parts accuracy,pii schedule.steps=100   # overrides: every inversion
    python scripts/robust_claim.py --parts feedforward --feedforward "schedule.steps=200"

Parts (--parts, in this order; each reports its wall time):
  train        the natural and the robust (--robust, an option of conf/robust/) digits CNN, ViT and Mixer,
               and the natural judge, each only where --out lacks it trained with these settings (its
               record <file>.json; the robust files are named by their attack's settings,
               cnn_linf_eps0.1_....pt, which conf/model/digits_*.yaml load with robust=linf)
  accuracy     held-out clean accuracy and robust accuracy (PGD with robust.eval_steps steps at the
               training epsilon) of both versions of each architecture
  pii          digits 0-9 of both versions inverted with the digits claim's methods (pii/run/digits.py),
               judged by the natural judge: judged top-1, mean judge p, spectral slope; a grid per
               method, rows natural / robust per architecture
  feedforward  train_invert.py's logit-conditioned generator on a natural and on a robust small CNN,
               the same budget: agreement, retrieval in features and pixels, PSNR, SSIM, chance; a grid
               of held-out originals over both reconstructions
Writes --json (wall times, every figure; its command, commit, date and hardware in the manifest.json
beside it) and the grids to --figures.
"""

import argparse
import os
import shlex
import time
from pathlib import Path

import torch
from torchvision.utils import make_grid, save_image

from pii import models
from pii.eval import gallery, provenance, results
from pii.feedforward.config import compose_train_invert
from pii.files import write_json
from pii.models.digits import digits_split
from pii.models.robust import PGD, robust_accuracy
from pii.models.training import accuracy
from pii.run import digits
from pii.run.cli import ScriptParser, script_main
from pii.run.compose import compose

ROOT = Path(__file__).resolve().parent.parent
PARTS = ("train", "accuracy", "pii", "feedforward")
VERSIONS = ("natural", "robust")


def weights(out: Path, short: str, tag: str) -> Path:
    return out / f"{short}{tag}.pt"


def train_missing(out: Path, robust: str, tag: str, architectures: dict, epoch_scale: float) -> dict:
    """Train the natural models (and the natural judge), then the robust ones, that --out lacks with
    these settings (pii.run.digits.is_trained); per version the files trained and the seconds it took."""
    epochs = digits.scaled_epochs(epoch_scale)  # the natural models' budget: the same for the robust ones
    missing = {"natural": [s for s in [*architectures, digits.JUDGE]
                           if not digits.is_trained(out, s, epochs, robust="none")],
               "robust": [s for s in architectures if not digits.is_trained(out, s, epochs, robust=robust)]}
    trained = {}
    for version, option in zip(VERSIONS, ("none", robust)):
        started = time.perf_counter()
        if missing[version]:
            digits.train_all(out, epochs, which=missing[version], robust=option)
        trained[version] = {"files": [weights(out, s, "" if version == "natural" else tag).name
                                      for s in missing[version]],
                            "seconds": round(time.perf_counter() - started, 1)}
    return trained


def accuracies(out: Path, robust_cfg, tag: str, architectures: dict) -> dict:
    """Per architecture and version: held-out clean accuracy and accuracy under the evaluation PGD."""
    _, (x_test, y_test) = digits_split()
    attack = PGD.evaluation(robust_cfg)
    table = {}
    for short, name in architectures.items():
        for version, version_tag in zip(VERSIONS, ("", tag)):
            clf = models.build(digits.model_config(name, str(weights(out, short, version_tag))), "cpu",
                               **models.PLAIN)
            table.setdefault(short, {})[version] = {"clean": accuracy(clf, x_test, y_test),
                                                    "robust": robust_accuracy(clf, x_test, y_test, attack)}
    return {"attack": vars(attack), "held_out_images": len(x_test), "accuracy": table}


def pii_part(out: Path, robust: str, tag: str, architectures: dict, methods: dict, overrides: list[str],
             figures: Path) -> dict:
    """Both versions inverted with every method; one grid per method (rows: architecture x version)."""
    table = {version: digits.invert_all(out, overrides, methods=methods, architectures=architectures,
                                        robust=name)
             for version, name in zip(VERSIONS, ("none", robust))}
    grids = {}
    for method in methods:
        jobs = []
        for short, name in architectures.items():
            for option, version_tag in zip(("none", robust), ("", tag)):
                run_dir = out / "runs" / (short + version_tag) / method
                jobs.append(gallery.Job(run_dir, [f"model={name}", f"robust={option}"],
                                        results.read(run_dir / results.METRICS)))
        grids[method] = figures / f"robust_digits_pii_{method}.png"
        gallery.grid(jobs, cell=64).save(grids[method])
    return {"results": table, "grids": {k: str(v.relative_to(ROOT) if v.is_relative_to(ROOT) else v)
                                        for k, v in grids.items()}}


def feedforward_part(out: Path, robust: str, robust_cfg, overrides: list[str], figures: Path,
                     images: int = 10) -> dict:
    """The logit-conditioned generator on a natural and on a robust small CNN, the same budget and data."""
    from pii.feedforward import classifier as classifier_lib
    from pii.feedforward import data as data_lib
    from pii.feedforward import generator as g_lib
    from pii.feedforward.evaluate import reconstruct
    from pii.feedforward.runner import train_invert
    from pii.feedforward.train import CHECKPOINT, load_checkpoint

    attack = PGD.evaluation(robust_cfg)
    table, rows = {}, []
    for version, name in zip(VERSIONS, ("none", robust)):
        run_dir = out / "feedforward" / version
        cfg = compose_train_invert([f"robust={name}", "conditions=[logits]", "analyses=[reconstructions]",
                                    f"output_dir={run_dir}", *overrides])
        started = time.perf_counter()
        metrics = train_invert(cfg)
        seconds = time.perf_counter() - started
        res = int(cfg.generator.resolution)
        data = data_lib.build(cfg.data, res)
        clf = classifier_lib.build(cfg.classifier, None, data, res, torch.device("cpu"), data_cfg=cfg.data,
                                   robust_cfg=cfg.robust)  # the one the run trained: cached
        x_test, y_test = data_lib.load_all(data.test)
        G = g_lib.build(cfg.generator, data.num_classes, "logits", float(cfg.temperature))
        G.load_state_dict(load_checkpoint(run_dir / "logits" / CHECKPOINT)["G_ema"])
        if not rows:
            rows.append(x_test[:images])
        rows.append(reconstruct(G.eval(), clf, x_test[:images]))
        table[version] = {**metrics["eval"]["logits"], "seconds": seconds, "steps": metrics["steps"],
                          "classifier_clean_accuracy": accuracy(clf, x_test, y_test),
                          "classifier_robust_accuracy": robust_accuracy(clf, x_test, y_test, attack),
                          "run_dir": str(run_dir)}
    grid = figures / "robust_feedforward_reconstructions.png"
    save_image(make_grid(torch.cat(rows), nrow=images, padding=2, pad_value=1.0), grid)
    return {"results": table, "attack": vars(attack), "grid_rows": ["held-out originals", *VERSIONS],
            "grid": str(grid.relative_to(ROOT) if grid.is_relative_to(ROOT) else grid)}


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/digits", help="checkpoints (cached) and runs")
    parser.add_argument("--robust", default="linf", help="the robust version: an option of conf/robust/ (linf, l2)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--epochs", type=float, default=1.0, help="scale every digits model's epochs (both versions)")
    parser.add_argument("--methods", default=",".join(digits.CLAIM_METHODS), help=f"of {', '.join(digits.METHODS)}")
    parser.add_argument("--architectures", default=",".join(digits.ARCHITECTURES), help="of cnn, vit, mixer")
    parser.add_argument("--feedforward", default="", help="train_invert overrides for both generators, quoted")
    parser.add_argument("--json", default="docs/results/robust/robust_claim.json")
    parser.add_argument("--figures", default="docs/figures")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every inversion")
    return parser


def main(argv: list[str]) -> None:
    cli = parser()
    args = cli.parse_intermixed_args(argv)
    parts = digits.chosen("--parts", args.parts, dict.fromkeys(PARTS))
    methods = digits.chosen("--methods", args.methods, digits.METHODS)
    architectures = digits.chosen("--architectures", args.architectures, digits.ARCHITECTURES)
    robust_cfg = compose([f"robust={args.robust}"]).robust  # a bad option fails here, before anything runs
    if robust_cfg.norm is None:
        cli.error("--robust must name a robust option (linf, l2), not none")
    out, figures, json_path = Path(args.out), Path(args.figures), Path(args.json)
    figures.mkdir(parents=True, exist_ok=True)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    # the command, commit, date and machine go to manifest.json beside it (pii.eval.provenance)
    report = {"load_average_at_start": os.getloadavg()[0],
              "robust": {"option": args.robust, **{k: robust_cfg[k] for k in robust_cfg}},
              "epochs": digits.scaled_epochs(args.epochs), "wall_seconds": {}}
    tag = robust_cfg.tag
    for part in parts:
        started = time.perf_counter()
        if part == "train":
            report["trained"] = train_missing(out, args.robust, tag, architectures, args.epochs)
        elif part == "accuracy":
            report["accuracy"] = accuracies(out, robust_cfg, tag, architectures)
        elif part == "pii":
            report["pii"] = {"methods": methods, "schedule": digits.SCHEDULE, "overrides": args.overrides,
                             **pii_part(out, args.robust, tag, architectures, methods, args.overrides, figures)}
        elif part == "feedforward":
            overrides = shlex.split(args.feedforward)
            report["feedforward"] = {"overrides": overrides,
                                     **feedforward_part(out, args.robust, robust_cfg, overrides, figures)}
        report["wall_seconds"][part] = round(time.perf_counter() - started, 1)
        write_json(json_path, report)  # after each part: a later failure keeps it
        provenance.record([json_path])
        print(f"{part}: {report['wall_seconds'][part]:.0f} s", flush=True)
    print(format_tables(report))
    print(f"written to {json_path}")


def format_tables(report: dict) -> str:
    """Markdown tables of whatever parts the report holds."""
    lines = []
    if "accuracy" in report:
        a = report["accuracy"]
        lines += [f"\nheld-out accuracy ({a['held_out_images']} digits), clean / under PGD-{a['attack']['norm']} "
                  f"eps {a['attack']['epsilon']:g} ({a['attack']['steps']} steps)",
                  "| architecture | natural clean | natural robust | robust clean | robust robust |",
                  "|---|---|---|---|---|"]
        for short, v in a["accuracy"].items():
            lines.append(f"| {short} | {v['natural']['clean']:.3f} | {v['natural']['robust']:.3f} | "
                         f"{v['robust']['clean']:.3f} | {v['robust']['robust']:.3f} |")
    if "pii" in report:
        lines += ["\nPII: judged top-1 / mean judge p / spectral slope over digits 0-9",
                  "| architecture | method | natural | robust |", "|---|---|---|---|"]
        by_version = report["pii"]["results"]
        for short in by_version["natural"]:
            for method in by_version["natural"][short]:
                cells = [by_version[v][short][method] for v in VERSIONS]
                lines.append(f"| {short} | {method} | " + " | ".join(
                    f"{100 * c['judge_top1']:.0f}% / {c['judge_mean_probability']:.2f} / {c['spectral_slope']:.2f}"
                    for c in cells) + " |")
    if "feedforward" in report:
        keys = ("agreement", "retrieval_features", "retrieval_pixels", "psnr", "ssim", "chance",
                "classifier_clean_accuracy", "classifier_robust_accuracy")
        lines += ["\nfeedforward inversion, held-out digits", "| classifier | " + " | ".join(keys) + " |",
                  "|---|" + "---|" * len(keys)]
        for version, r in report["feedforward"]["results"].items():
            lines.append(f"| {version} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    script_main(main)
