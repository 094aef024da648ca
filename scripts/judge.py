"""Judge a directory of inversions with models that were not inverted.

    python scripts/judge.py outputs/invert/<run>            # one run (EfficientNet-Lite2 judges)
    python scripts/judge.py outputs/multirun/<sweep>        # every run below it
    python scripts/judge.py <dir> verifier=[efficientnet_lite2,efficientnet_lite0] device=cpu
    python scripts/judge.py <dir> verifier=timm verifier.timm.name=resnet50 verifier.timm.weights=/path.pth

Finds every `<class_id>_<slug>.png` (what invert.py saves per class) under the
directory, prints per run and judge the per class table and the overall top-1 /
top-5 accuracy, and writes them all to `<dir>/judge.json`.
"""

import argparse
from pathlib import Path

from pii.errors import ConfigError
from pii.eval.judge import JUDGE_JSON, build_judges, format_table, judge_directory, read_inversions
from pii.models.device import resolve_device
from pii.run.cli import ScriptParser, script_main
from pii.run.compose import compose
from pii.run.config import check_invert


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path, help="a run, or a folder of runs, of invert.py")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for invert.py (verifier=..., device=...)")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    root, overrides = args.directory, args.overrides
    cfg = compose(overrides)
    check_invert(cfg)  # device, judges' sizes: before any file is read
    if not cfg.get("verifier"):
        raise ConfigError("verifier=none leaves nothing to judge with; e.g. verifier=efficientnet_lite2")
    inversions = read_inversions(root)  # a wrong directory or damaged files fail before the judges load
    judges = build_judges(cfg.get("verifier"), resolve_device(str(cfg.device)))
    results = judge_directory(root, judges, inversions)
    for run, by_judge in results.runs.items():
        for name, result in by_judge.items():
            print(f"\n== {root / run} judged by {name}\n{format_table(result)}")
    print()
    for name, o in results.overall.items():
        print(f"overall {name}: {o.images} images, top-1 {o.top1:.1%}, top-5 {o.top5:.1%}, "
              f"mean p(target) {o.mean_probability:.3f}, spectral slope {o.spectral_slope:.2f}")
    print(f"written to {root / JUDGE_JSON}")


if __name__ == "__main__":
    script_main(main)
