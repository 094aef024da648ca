"""The method leaderboard: python scripts/leaderboard.py <run or sweep dir> [more dirs] [--out DIR]

    python invert.py -m experiment=sweep_methods classes=benchmark20 seed=0,1
    python scripts/leaderboard.py outputs/sweeps/<time>_methods --out docs/results/leaderboard

Finds every finished run (metrics.json) under the directories, groups them by
method (the `method` key the presets set) and class list (conf/classes/),
pools their seeds, and writes leaderboard.md (judged top-1 / top-5 / mean
probability per judge, spectral slope, the inverted model's own probability,
seconds per class), leaderboard.json and leaderboard_grid.jpg (rows = runs,
columns = classes) into --out (default: the first directory).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's pii, not an installed one

from pii.eval.leaderboard import leaderboard, markdown, method_grid  # noqa: E402
from pii.files import write_atomic, write_json, write_text  # noqa: E402
from pii.run.cli import script_main, writable_directory  # noqa: E402


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", type=Path, nargs="+", help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="where to write (default: the first directory)")
    parser.add_argument("--cell", type=int, default=96, help="grid cell size in px")
    args = parser.parse_args(argv)
    if args.cell < 8:
        parser.error(f"--cell must be >= 8 px, got {args.cell}")
    out = writable_directory(args.out or args.dirs[0], "--out")
    summaries, runs = leaderboard(args.dirs)
    table = markdown(summaries)
    write_text(out / "leaderboard.md", table + "\n")
    write_json(out / "leaderboard.json", {"runs": [str(d) for d, _ in runs], "rows": summaries})
    grid = method_grid(runs, args.cell).convert("RGB")
    write_atomic(out / "leaderboard_grid.jpg", lambda f: grid.save(f, format="jpeg", quality=90))
    print(table)
    print(f"written to {out}/leaderboard.md, leaderboard.json, leaderboard_grid.jpg")


if __name__ == "__main__":
    script_main(main)
