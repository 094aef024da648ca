"""The method leaderboard: python scripts/leaderboard.py <run or sweep dir> [more dirs] [--out DIR]

    python invert.py -m experiment=pii,pii_fourier,lucent,maco,deepinversion_noise classes=benchmark20 seed=0,1
    python scripts/leaderboard.py outputs/multirun/<time> --out docs/results/leaderboard \
        --grid docs/figures/leaderboard_grid.jpg

Finds every finished run (metrics.json) under the directories, groups them by
method (the `method` key the presets set) and class list (conf/classes/),
pools their seeds, and writes leaderboard.md (judged top-1 / top-5 / mean
probability per judge, spectral slope, the inverted model's own probability,
seconds per class) and leaderboard.json into --out (default: the first
directory), and the grid (rows = runs, columns = classes) to --grid (default:
<out>/leaderboard_grid.jpg). leaderboard.json names each run relative to the
directory it was found under (`<that directory's name>/<job>`), and every file
written is recorded in the manifest.json beside it (command, commit, date,
hardware: pii.eval.provenance).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pii.eval import provenance
from pii.eval.leaderboard import leaderboard, markdown, method_grid
from pii.eval.gallery import check_cell
from pii.files import writable_file, write_atomic, write_json, write_text
from pii.run.cli import ScriptParser, script_main, writable_directory


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", type=Path, nargs="+", help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="where to write (default: the first directory)")
    parser.add_argument("--grid", type=Path, help="where to write the grid (default: <out>/leaderboard_grid.jpg)")
    parser.add_argument("--cell", type=int, default=96, help="grid cell size in px")
    return parser


def main(argv: list[str]) -> None:
    cli = parser()
    args = cli.parse_intermixed_args(argv)
    check_cell(args.cell)
    out = writable_directory(args.out or args.dirs[0], "--out")
    grid_path = writable_file(args.grid or out / "leaderboard_grid.jpg", "--grid")
    for path in (out / "leaderboard.md", out / "leaderboard.json"):  # every file is checked before any is written
        writable_file(path, "--out")
    for folder in {out, grid_path.parent}:
        provenance.read(folder)  # a damaged manifest.json refused now, not after the tables are written
    summaries, runs = leaderboard(args.dirs)
    table = markdown(summaries)
    write_text(out / "leaderboard.md", table + "\n")
    write_json(out / "leaderboard.json", {"runs": [provenance.portable(d, args.dirs) for d, _ in runs],
                                          "rows": summaries})
    grid = method_grid(runs, args.cell).convert("RGB")
    write_atomic(grid_path, lambda f: grid.save(f, format="jpeg", quality=90))
    provenance.record([out / "leaderboard.md", out / "leaderboard.json", grid_path])
    print(table)
    print(f"written to {out}/leaderboard.md, leaderboard.json and {grid_path} (origin in manifest.json beside each)")


if __name__ == "__main__":
    script_main(main)
