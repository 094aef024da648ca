"""The method leaderboard: python scripts/leaderboard.py <run or sweep dir> [more dirs] [--out DIR]

    python invert.py -m experiment=pii,pii_fourier,lucent,maco,deepinversion_noise classes=benchmark20 seed=0,1
    python scripts/leaderboard.py outputs/multirun/<time> --out docs/results/leaderboard

Finds every finished run (metrics.json) under the directories, groups them by
method (the `method` key the presets set) and class list (conf/classes/),
pools their seeds, and writes leaderboard.md (judged top-1 / top-5 / mean
probability per judge, spectral slope, the inverted model's own probability,
seconds per class), leaderboard.json and leaderboard_grid.jpg (rows = runs,
columns = classes) into --out (default: the first directory).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pii, not an installed one

from pii.errors import ConfigError  # noqa: E402
from pii.eval.leaderboard import leaderboard, markdown, method_grid  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", type=Path, nargs="+", help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="where to write (default: the first directory)")
    parser.add_argument("--cell", type=int, default=96, help="grid cell size in px")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summaries, runs = leaderboard(args.dirs)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.dirs[0]
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(summaries)
    (out / "leaderboard.md").write_text(table + "\n")
    (out / "leaderboard.json").write_text(json.dumps(
        {"runs": [str(d) for d, _ in runs], "rows": summaries}, indent=2) + "\n")
    method_grid(runs, args.cell).convert("RGB").save(out / "leaderboard_grid.jpg", quality=90)
    print(table)
    print(f"written to {out}/leaderboard.md, leaderboard.json, leaderboard_grid.jpg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
