"""The frontier: judged quality against seconds per class, per method, over a range of budgets.

    python scripts/frontier.py --out outputs/frontier                      # conf/frontier/config.yaml's
    python scripts/frontier.py --out outputs/frontier --methods pii,maco \
        --budget 'steps50: schedule.steps=50' --budget 'ens8: schedule.steps=50 augmentation.ensemble.size=8'
    python scripts/frontier.py --out outputs/frontier hydra/launcher=parallel hydra.launcher.n_jobs=2
    python scripts/frontier.py --out outputs/holdout --classes holdout20 --seed 0,1 --methods fast   # seeds pooled
    python scripts/frontier.py --report outputs/frontier/sweeps --out docs/results/frontier   # only the report

Runs each budget (a name and overrides of invert.py; --budgets FILE or --budget 'name: overrides', by
default conf/frontier/config.yaml's) as one invert.py sweep of the methods (experiment presets), the class
list and the seed, in <out>/sweeps/<budget>/; the overrides given after the options go to every sweep
(a launcher, device=...). The same command again continues the stopped sweeps (finished jobs skipped).
Then reads every finished run there (--report: under the directories given) and writes frontier.md
(per method and budget: seconds per class, the first judge's top-1 and mean p(target), and each
method's knee), frontier.json and frontier.png (mean p and top-1 against seconds per class) into
--out, each recorded in the manifest.json beside them (command, commit, date, hardware).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from pii import CONF_DIR
from pii.errors import ConfigError
from pii.eval import provenance
from pii.eval.frontier import knees, markdown, plot, points
from pii.files import writable_file, write_atomic, write_json, write_text
from pii.run.cli import ScriptParser, script_main, writable_directory
from pii.run.frontier import SETTINGS, SWEEPS, Budget, planned, settings

FILES = ("frontier.md", "frontier.json", "frontier.png")


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="invert.py overrides for every sweep (a launcher, device=...)")
    parser.add_argument("--out", type=Path, help="where the sweeps and the frontier go (with --report: where the "
                                                 "frontier goes, default the first directory)")
    parser.add_argument("--methods", help="experiment presets, comma-separated (default: conf/frontier/config.yaml's)")
    parser.add_argument("--classes", help="a class list of conf/classes/, or none (default: the config's)")
    parser.add_argument("--seed", help="the seed of every run, or seeds comma-separated (each a run, pooled in the "
                                       "report; default: the config's)")
    parser.add_argument("--budgets", type=Path, help="a YAML file with a `budgets:` table (name: [overrides])")
    parser.add_argument("--budget", action="append", default=[],
                        help="'name: override ...', repeated; replaces the file's budgets")
    parser.add_argument("--report", type=Path, nargs="+", help="only report the runs under these directories")
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_intermixed_args(argv)
    conf = settings(args.budgets or SETTINGS)
    failed: list[str] = []
    if args.report:
        given = [name for name in ("methods", "classes", "seed", "budgets", "budget", "overrides")
                 if getattr(args, name) is not None and getattr(args, name) != []]
        if given:
            what = "the invert.py overrides" if given[0] == "overrides" else f"--{given[0]}"
            raise ConfigError(f"--report only reads finished runs: drop {what} (they are for running sweeps)")
        roots, out = args.report, writable_directory(args.out or args.report[0], "--out")
    else:
        if args.out is None:
            raise ConfigError("--out: give the directory of the sweeps and the frontier (e.g. --out outputs/frontier)")
        sweeps = args.out.absolute() / SWEEPS
        plan = planned(args, conf, sweeps)  # every budget checked before anything is written
        out = writable_directory(args.out, "--out")
        check_outputs(out)
        failed = run_sweeps(plan)
        roots = [sweeps]
    check_outputs(out)
    found = points(roots)
    gain = float(conf.knee_gain)
    bends = knees(found, gain)
    table = markdown(found, bends, gain)
    write_text(out / "frontier.md", table + "\n")
    write_json(out / "frontier.json", {"knee_gain": gain, "points": found, "knees": bends})
    image = plot(found, bends)
    write_atomic(out / "frontier.png", lambda f: image.save(f, format="png"))
    provenance.record([out / name for name in FILES])
    print(table)
    print(f"written to {out}/frontier.md, frontier.json and frontier.png (origin in manifest.json beside them)")
    if failed:
        print(f"error: the sweeps of budget{'s' if len(failed) > 1 else ''} {', '.join(failed)} did not finish (their "
              f"jobs' errors above); the same command again continues them", file=sys.stderr)
        return 1
    return 0


def check_outputs(out: Path) -> None:
    """Every file is checked before any is written, and before any sweep runs."""
    for name in FILES:
        writable_file(out / name, "--out")
    provenance.read(out)  # a damaged manifest.json refused now, not after the work


def unfinished_jobs(argv: list[str]) -> int:
    """How many of the sweep's jobs have no metrics.json yet, every job checked as invert.py checks it
    (a bad override, or a sweep folder that holds another command's sweep, is a ConfigError now, before
    any budget runs). A sweeper that draws its jobs as it goes (Optuna) cannot be counted: -1."""
    from pii.run.checks import check_invert_job
    from pii.run.cli import planned
    from pii.run.sweep import FINISHED, register_plugins

    register_plugins()
    with planned(argv, CONF_DIR, "config", check_invert_job) as plan:
        if plan is None:
            raise ConfigError(f"{' '.join(argv)}: a flag of Hydra's that prints (--help, --cfg) runs no sweep")
        if plan.jobs is None:
            return -1
        return sum(job.state != FINISHED for job in plan.jobs)


def run_sweep(argv: list[str]) -> int:
    """invert.py with `argv`, in this process (its imports paid once for every budget); its exit code."""
    from pii.run.cli import invert_main

    saved = sys.argv
    sys.argv = ["invert.py", *argv]  # what invert.py reads, and names in the command that continues a job
    try:
        invert_main()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = saved
    return 0


def run_sweeps(sweeps: list[tuple[Budget, list[str]]]) -> list[str]:
    """Each budget's sweep (its invert.py command line) that has jobs left, in turn. Returns the budgets
    whose sweep did not finish (a job failed or was stopped: the same command again continues them); a
    sweep refused or interrupted ends this command too, with its exit code (invert.py has said why)."""
    left = [(b, argv) for b, argv in sweeps if unfinished_jobs(argv)]  # every sweep checked before any runs
    for b, _ in sweeps:
        if all(b is not other for other, _ in left):
            print(f"budget {b.name}: every job finished; skipped", file=sys.stderr)
    failed = []
    for b, argv in left:
        print(f"budget {b.name}: python invert.py {shlex.join(argv)}", file=sys.stderr, flush=True)
        code = run_sweep(argv)
        if code == 1:
            failed.append(b.name)
        elif code:
            sys.exit(code)
    return failed


if __name__ == "__main__":
    script_main(main)
