"""Gallery of a sweep: python scripts/report.py outputs/sweeps/<time>_<name>

Writes ablation_grid.png (rows = swept values, columns = classes) and
report.html (the grid and each job's metrics and overrides) into that dir (or --out).
A folder of sweeps (scripts/frontier.py's <out>/sweeps/) shows every sweep's jobs, each row
named by its sweep: python scripts/report.py outputs/frontier/sweeps --columns 8 --out <dir>
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pii.errors import ConfigError
from pii.eval.gallery import check_cell, write_report
from pii.run.cli import ScriptParser, script_main, writable_directory

log = logging.getLogger("report")


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("multirun_dir", type=Path, help="a Hydra multirun (sweep) directory")
    parser.add_argument("--cell", type=int, default=128, help="grid cell size in px (default 128)")
    parser.add_argument("--columns", type=int, help="only the first N classes (or units) in the grid")
    parser.add_argument("--out", type=Path, help="where the grid and page go (default: the multirun dir)")
    return parser


def main(argv: list[str]) -> None:
    cli = parser()
    args = cli.parse_intermixed_args(argv)
    check_cell(args.cell)
    if args.columns is not None and args.columns < 1:
        raise ConfigError(f"--columns must be a whole number >= 1 (the first classes shown), got {args.columns}")
    out = writable_directory(args.out, "--out") if args.out else None
    grid, page = write_report(args.multirun_dir, args.cell, args.columns, out)
    log.info("grid: %s", grid)
    log.info("page: %s", page)


if __name__ == "__main__":
    script_main(main)
