"""The paper's architecture claim at small scale: one PII setting inverts a CNN, a ViT and an MLP-Mixer.

    python scripts/digits_claim.py                        # train (a few minutes on CPU), invert, judge
    python scripts/digits_claim.py --skip-train           # reuse the checkpoints in --out
    python scripts/digits_claim.py --out outputs/digits_short schedule.steps=20   # overrides go to every inversion

Trains on sklearn's digits (32 px) a small CNN, ViT and MLP-Mixer and, apart, a
ResNet-18 judge; saves their state_dicts as <out>/{cnn,vit,mixer,judge}.pt
(conf/model/digits_*.yaml load them); inverts digits 0-9 of each with PII, PII
without ColorShift and plain cross-entropy (conf/experiment/digits/); prints the
judge's top-1 accuracy per architecture x method and writes <out>/claim.json
(recorded in <out>/manifest.json: command, commit, date, hardware).
"""

import argparse
from pathlib import Path

from pii.eval import provenance
from pii.files import write_json
from pii.run import digits
from pii.run.cli import ScriptParser, script_main

def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/digits", help="checkpoints, runs and claim.json go here")
    parser.add_argument("--skip-train", action="store_true", help="reuse <out>/*.pt")
    parser.add_argument("--train", default="cnn,vit,mixer,judge", help="which models to (re)train")
    parser.add_argument("--epochs", type=float, default=1.0, help="scale every model's epochs")
    parser.add_argument("--methods", default=",".join(digits.CLAIM_METHODS),
                        help=f"comma-separated, of {', '.join(digits.METHODS)}")
    parser.add_argument("--architectures", default=",".join(digits.ARCHITECTURES),
                        help="comma-separated, of cnn, vit, mixer (deepinversion_noise: cnn only, the one with BatchNorm)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every inversion")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    out = Path(args.out)
    methods = digits.chosen("--methods", args.methods, digits.METHODS)
    architectures = digits.chosen("--architectures", args.architectures, digits.ARCHITECTURES)
    if args.skip_train:
        accuracies = digits.test_accuracies(out)
    else:
        digits.train_all(out, digits.scaled_epochs(args.epochs), which=args.train.split(","), robust="none")
        accuracies = digits.test_accuracies(out)
    results = digits.invert_all(out, args.overrides, methods=methods, architectures=architectures, robust="none")
    table = digits.format_table(results, accuracies)
    write_json(out / "claim.json", {"test_accuracy": accuracies, "results": results,
                                    "settings": {"methods": methods, "overrides": args.overrides}})
    provenance.record([out / "claim.json"])
    print("\njudged top-1 over digits 0-9 (judge: ResNet-18 trained apart), mean judge p(target) in brackets")
    print(table)
    for short, by_method in results.items() if {"pii", "plain_ce"} <= set(methods) else ():
        ahead = by_method["pii"]["judge_top1"] > by_method["plain_ce"]["judge_top1"]
        print(f"{short}: PII {'ahead of' if ahead else 'NOT ahead of'} plain cross-entropy")
    print(f"written to {out / 'claim.json'}")


if __name__ == "__main__":
    script_main(main)
