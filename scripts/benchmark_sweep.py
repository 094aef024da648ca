"""Wall time of a class list split into jobs (classes_per_job) against one run over the whole list, on
this machine, in one command:

    python scripts/benchmark_sweep.py --jobs 4 --launcher ray classes=benchmark20 experiment=fast schedule.steps=20

Runs `invert.py <overrides>` (one run: every class in one batch, torch on all cores) and
`invert.py -m <overrides> classes_per_job=<classes / jobs> hydra/launcher=<launcher>` (as many jobs at
once as there are cores, one torch thread each) in the order of --order (default single, sweep, sweep,
single: each comes first once, on a machine whose load changes), each a fresh process, timed from start
to exit. Prints each wall time, the means, the ratio sweep / single, and the judged figures of both
(the sweep's jobs gathered as the leaderboard does), and how far apart each class's images are.

--same-arithmetic runs both sides on one torch thread per process with ATen's portable kernels
(ATEN_CPU_CAPABILITY=default): then a class's image is the same, bit for bit, in its chunk and in the
whole list (docs/cluster.md says why it is not otherwise), at the cost of speed.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pii.errors import ConfigError
from pii.eval import provenance, results
from pii.eval.leaderboard import find_runs
from pii.files import read_png, write_json
from pii.models.classes import parse_class_ids
from pii.run.cli import ScriptParser, script_main
from pii.run.compose import compose

ROOT = Path(__file__).resolve().parent.parent

LAUNCHERS = {"ray": ["hydra/launcher=ray"], "submitit_local": ["hydra/launcher=submitit_local"], "basic": [],
             "parallel": ["hydra/launcher=parallel", f"hydra.launcher.n_jobs={os.cpu_count()}"]}


def timed(cmd: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise ConfigError(f"{' '.join(cmd[1:3])}... exited with {proc.returncode}; see {log}")
    return seconds


def judged(run: results.RunResult) -> dict:
    return {name: {"top1": j.top1, "top5": j.top5, "mean_probability": j.mean_probability}
            for name, j in (run.judge or {}).items()}


def image_gap(single: results.RunResult, single_dir: Path, sweep: results.RunResult) -> dict:
    """Per class, the largest difference between the two runs' PNGs, in 8-bit levels."""
    theirs = {e.class_id: Path(e.image) for e in sweep.classes}
    gaps = [float((read_png(single_dir / e.image) - read_png(theirs[e.class_id])).abs().max() * 255)
            for e in single.classes]
    return {"max_levels": max(gaps), "identical_classes": sum(g == 0 for g in gaps), "classes": len(gaps)}


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4, help="jobs the class list is split into (default 4)")
    parser.add_argument("--launcher", choices=sorted(LAUNCHERS), default="ray", help="the sweep's launcher")
    parser.add_argument("--order", default="single,sweep,sweep,single", help="runs, in order (default ABBA)")
    parser.add_argument("--out", type=Path, help="keep the runs and write benchmark_sweep.json here")
    parser.add_argument("--same-arithmetic", action="store_true",
                        help="one thread per process and ATEN_CPU_CAPABILITY=default on both sides: identical images")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, as for invert.py (e.g. classes=benchmark20)")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    order = args.order.split(",")
    if not set(order) <= {"single", "sweep"} or not {"single", "sweep"} <= set(order) or args.jobs < 1:
        raise ConfigError("--order lists single and sweep (e.g. single,sweep,sweep,single); --jobs >= 1")
    cfg = compose(args.overrides)
    classes = len(parse_class_ids(cfg.class_id, int(cfg.model.num_classes)))
    per_job = math.ceil(classes / args.jobs)
    out = args.out or Path(tempfile.mkdtemp(prefix="benchmark-sweep-"))
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "WANDB_MODE": "offline"}
    env.pop("OMP_NUM_THREADS", None)  # each side uses the cores as it would: the single run all, a job its share
    if args.same_arithmetic:
        env.update(OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY="default")
    seconds: dict[str, list[float]] = {"single": [], "sweep": []}
    load = []  # the machine's 1-minute load average before and after each run (other users' work shows here)
    dirs: dict[str, Path] = {}
    for k, kind in enumerate(order):
        target = out / f"{k}_{kind}"
        if kind == "single":
            cmd = [sys.executable, "invert.py", *args.overrides, f"hydra.run.dir={target}"]
        else:
            cmd = [sys.executable, "invert.py", "-m", *args.overrides, f"classes_per_job={per_job}",
                   *LAUNCHERS[args.launcher], f"hydra.sweep.dir={target}", "hydra.sweep.subdir=${hydra.job.num}"]
        before = os.getloadavg()[0]
        seconds[kind].append(timed(cmd, env, out / f"{k}_{kind}.log"))
        load.append([before, os.getloadavg()[0]])
        dirs[kind] = target
        print(f"{k}: {kind:6s} {seconds[kind][-1]:7.1f} s (load average {load[-1][0]:.1f} -> {load[-1][1]:.1f})",
              flush=True)
    single = results.read(dirs["single"] / results.METRICS)
    (sweep_dir, sweep), = results.gather(find_runs([dirs["sweep"]]))
    mean = {kind: sum(v) / len(v) for kind, v in seconds.items()}
    figures = {
        "classes": classes, "jobs": math.ceil(classes / per_job), "classes_per_job": per_job,
        "launcher": args.launcher, "cores": os.cpu_count(), "same_arithmetic": args.same_arithmetic,
        "overrides": args.overrides, "order": order,
        "seconds": seconds, "mean_seconds": mean, "sweep_over_single": mean["sweep"] / mean["single"],
        "order_ratios": [s / t for s, t in zip(seconds["sweep"], seconds["single"])], "load_average": load,
        "inversion_seconds": {"single": single.seconds, "sweep_jobs_added": sweep.seconds},
        "judged": {"single": judged(single), "sweep": judged(sweep)},
        "images": image_gap(single, dirs["single"], sweep),
    }
    for kind in ("single", "sweep"):
        print(f"{kind}: mean {mean[kind]:.1f} s over {len(seconds[kind])} runs; judged "
              + ", ".join(f"{n} top-1 {j['top1']:.0%} top-5 {j['top5']:.0%} mean p {j['mean_probability']:.3f}"
                          for n, j in figures["judged"][kind].items()))
    gap = figures["images"]
    print(f"images: {gap['identical_classes']} of {gap['classes']} classes identical, largest gap "
          f"{gap['max_levels']:.0f} of 255 levels")
    write_json(out / "benchmark_sweep.json", figures)
    provenance.record([out / "benchmark_sweep.json"])  # its command, commit, date and machine, in manifest.json
    print(f"runs and benchmark_sweep.json in {out}")
    print(f"sweep_over_single={figures['sweep_over_single']:.3f}")


if __name__ == "__main__":
    script_main(main)
