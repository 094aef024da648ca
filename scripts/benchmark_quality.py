"""Judged quality on the standard benchmark set (conf/classes/benchmark20.yaml).

    python scripts/benchmark_quality.py experiment=fast                  # Lite0, fast preset, Lite2 judges
    python scripts/benchmark_quality.py experiment=pii_fourier classes=holdout20 seed=1   # the held-out list
    python scripts/benchmark_quality.py model=vit_b32 model.weights=/path/vit.pth verifier=[efficientnet_lite2,efficientnet_lite0]

Inverts the 20 classes in one batched run (the same overrides as invert.py),
then prints each judge's per class table and its top-1 / top-5 accuracy. The
same as `python invert.py classes=benchmark20 ...`, with the table at the end.
To judge a finished run again: python scripts/judge.py <its output directory>.
"""

import argparse
import time

from pii.errors import ConfigError
from pii.eval.judge import format_table
from pii.run.cli import ScriptParser, run_directory, script_main
from pii.run.compose import compose
from pii.run.runner import run


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for invert.py")
    return parser


def main(argv: list[str]) -> None:
    overrides = parser().parse_intermixed_args(argv).overrides
    if not any(o.startswith("output_dir=") for o in overrides):
        overrides = [*overrides, f"output_dir=outputs/quality/{time.strftime('%Y-%m-%d_%H-%M-%S')}"]
    cfg = compose(["classes=benchmark20", *overrides])
    with run_directory(str(cfg.output_dir), "output_dir"):  # a new directory, held while the run writes
        result = run(cfg)
    if not result.judge:
        raise ConfigError("no judge ran (verifier=none, or no judge shares the model's classes)")
    for name, judged in result.judge.items():
        print(f"\n== {result.config.get('method', '')} on {len(result.classes)} classes, {result.model}, "
              f"judged by {name}\n{format_table(judged)}")
    print(f"\n{result.model} itself: mean p(target) {result.mean_probability:.3f}; spectral slope of the "
          f"images {result.spectral_slope:.2f} (photographs ~ -2 to -2.5, white noise 0)")
    print(f"{result.seconds:.0f} s in all, {result.seconds_per_class:.1f} s per class; "
          f"images and metrics.json in {result.config['output_dir']}")


if __name__ == "__main__":
    script_main(main)
