"""Every figure of a scripts/gpu_check.sh run, in one JSON: OUT/gpu_check.json.

    python scripts/gpu_report.py outputs/gpu_check
    python scripts/gpu_report.py all.json --merge call1/gpu_check.json call2/gpu_check.json

Reads what the check's parts left in OUT (parts.tsv, tests.xml, the paper run's
metrics.json, the benchmarks' JSON) and prints the headline figures. A check split
over several calls, each started in an empty OUT, gives one gpu_check.json per call:
--merge joins them into one (each figure from the last file that has it). The file
written is recorded in the manifest.json beside it (command, commit, date and the
GPU; a merge keeps the commit and GPU of the calls it joins).
"""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from pii.errors import ConfigError
from pii.eval import provenance, results
from pii.files import write_json
from pii.run.cli import ScriptParser, script_main


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def tests(out: Path) -> dict | None:
    try:
        suite = ET.parse(out / "tests.xml").getroot().find("testsuite")
    except (OSError, ET.ParseError):
        return None
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")}
    # per test, slowest first: what to cut when the check must fit its 8 minutes
    counts["seconds"] = dict(sorted(((f"{case.get('classname')}::{case.get('name')}", float(case.get("time", 0)))
                                     for case in suite.iter("testcase")), key=lambda item: -item[1]))
    return counts


def paper(out: Path) -> dict | None:
    try:
        run = results.read(out / "paper" / results.METRICS)
    except ConfigError:
        return None
    figures = {key: getattr(run, key) for key in ("model", "device", "seconds", "seconds_per_class", "steps",
                                                  "stage_sizes", "ensemble_size", "mean_probability", "top1_rate")}
    figures["classes"] = len(run.classes)
    figures["stage_seconds"] = [results.to_dict(t) for t in run.stage_seconds] if run.stage_seconds is not None else None
    figures["judges"] = {name: {key: getattr(judged, key) for key in ("model", "input_size", "images", "top1",
                                                                      "top5", "mean_probability")}
                         for name, judged in (run.judge or {}).items()}
    figures["misses"] = {name: [(c.name, c.prediction_name) for c in judged.classes if not c.top1]
                         for name, judged in (run.judge or {}).items()}
    return figures


def first_steps(out: Path) -> dict | None:
    """Seconds of each stage's first step, per variant of the first_step part."""
    found = {}
    for metrics in sorted((out / "first_step").glob(f"*/{results.METRICS}")):
        try:
            run = results.read(metrics)
        except ConfigError:
            continue
        found[metrics.parent.name] = [round(t.first_step_seconds, 2) for t in run.stage_seconds or []]
    return found or None


def benchmark(out: Path, name: str) -> dict | None:
    report = read_json(out / f"{name}.json")
    if report is None:
        return None
    keys = ("name", "classes_per_run", "precision", "channels_last", "compile", "seconds_per_class",
            "steps_per_second", "images_per_second", "peak_memory_mb", "flops_per_second", "warmup_seconds",
            "stage_sizes")
    paths = [{key: path[key] for key in keys} for path in report["paths"]]
    for path in paths:
        path["share_of_peak"] = path["flops_per_second"] / report["peak_flops"][path["precision"]]
    return {"overrides": report["overrides"], "gpu": report.get("gpu"), "torch": report.get("torch"),
            "class_ids": len(report["class_ids"]), "peak_flops": report["peak_flops"],
            "speedup_vs_naive": report["speedup_vs_naive"], "fastest": report.get("fastest"), "paths": paths}


def gather(out: Path) -> dict:
    parts = {}
    for line in (out / "parts.tsv").read_text().splitlines():
        name, rc, ms = line.split("\t")
        parts[name] = {"exit_code": int(rc), "seconds": int(ms) / 1000}
    gpu = (out / "gpu.txt").read_text().strip() if (out / "gpu.txt").is_file() else None
    return {"gpu": gpu, "parts": parts, "tests": tests(out), "paper": paper(out),
            "bench_lite0": benchmark(out, "bench_lite0"), "bench_vit": benchmark(out, "bench_vit"),
            "first_steps": first_steps(out)}


def torch_version(report: dict) -> str:
    """torch's version where the check ran (the benchmarks record it), else this process's."""
    import torch

    found = [b["torch"] for b in (report.get("bench_lite0"), report.get("bench_vit")) if b and b.get("torch")]
    return found[0] if found else torch.__version__


def merge(reports: list[dict]) -> dict:
    """One report from several calls' reports: every part, each figure from the last report that has it."""
    merged = {"gpu": None, "parts": {}}
    for report in reports:
        merged["parts"].update(report["parts"])
        merged.update({key: value for key, value in report.items() if key != "parts" and value is not None})
    return merged


def summarise(report: dict) -> None:
    print(f"gpu: {report['gpu']}")
    for name, part in report["parts"].items():
        print(f"part {name}: exit {part['exit_code']} in {part['seconds']:.0f} s")
    if report.get("tests"):
        print(f"tests: {report['tests']}")
    if report.get("paper"):
        p = report["paper"]
        judged = ", ".join(f"{n} top-1 {j['top1']:.0%} top-5 {j['top5']:.0%} mean p {j['mean_probability']:.3f}"
                           for n, j in p["judges"].items())
        print(f"paper preset: {p['classes']} classes, {p['seconds_per_class']:.1f} s per class, "
              f"own mean p {p['mean_probability']:.3f}; {judged}")
        if p["stage_seconds"]:
            print("  stages: " + ", ".join(f"{t['size']} px {t['seconds']:.0f} s (first step {t['first_step_seconds']:.1f})"
                                           for t in p["stage_seconds"]))
    for variant, seconds in (report.get("first_steps") or {}).items():
        print(f"first steps ({variant}): " + ", ".join(f"{s:.1f}" for s in seconds) + " s")
    for name in ("bench_lite0", "bench_vit"):
        if report.get(name):
            b = report[name]
            rows = "; ".join(f"{r['name']} {r['seconds_per_class']:.2f} s/class {r['share_of_peak']:.1%} of peak "
                             f"warm-up {r['warmup_seconds']:.0f} s" for r in b["paths"])
            print(f"{name}: speedup_vs_naive {b['speedup_vs_naive']:.1f} ({b['fastest']}); {rows}")


def parser() -> ScriptParser:
    """The command line, read without running by tests/test_manifests.py (the stored results' commands)."""
    parser = ScriptParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="outputs/gpu_check", help="the check's OUT folder")
    parser.add_argument("--merge", nargs="+", metavar="JSON",
                        help="instead: join these calls' gpu_check.json files into OUT (here a file)")
    return parser


def main(argv: list[str]) -> None:
    args = parser().parse_intermixed_args(argv)
    if args.merge:
        path, report = Path(args.out), merge([json.loads(Path(name).read_text()) for name in args.merge])
        calls = [provenance.read(Path(name).parent).get("files", {}).get(Path(name).name, {}) for name in args.merge]
        origin = {key: " / ".join(sorted({c[key] for c in calls if key in c}))
                  for key in ("commit", "hardware") if any(key in c for c in calls)}
    else:
        path, report = Path(args.out) / "gpu_check.json", gather(Path(args.out))
        origin = {"hardware": f"{report['gpu']}; torch {torch_version(report)}"} if report["gpu"] else {}
    write_json(path, report)
    provenance.record([path], **origin)
    summarise(report)
    print(f"all figures: {path}")


if __name__ == "__main__":
    script_main(main)
