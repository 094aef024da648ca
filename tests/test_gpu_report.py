"""scripts/gpu_report.py --merge: a GPU check split over calls (each in an empty OUT) gives one JSON."""

import json

from conftest import run_cli


def test_merge_keeps_every_part_and_each_figure_from_the_call_that_has_it(tmp_path):
    part = {"exit_code": 0, "seconds": 1.0}
    paper = {"classes": 20, "seconds_per_class": 9.1, "mean_probability": 1.0, "stage_seconds": None,
             "judges": {"efficientnet_lite2": {"top1": 1.0, "top5": 1.0, "mean_probability": 0.7}}}
    calls = [
        {"gpu": "H100", "parts": {"paper": part}, "tests": None, "paper": paper,
         "bench_lite0": None, "bench_vit": None, "first_steps": None},
        {"gpu": "H100", "parts": {"tests": part, "bench_vit": part}, "tests": {"tests": 9, "failures": 0},
         "paper": None, "bench_lite0": None, "bench_vit": None, "first_steps": None},
    ]
    files = []
    for i, call in enumerate(calls):  # each call's OUT: its gpu_check.json and the manifest the check wrote
        (tmp_path / f"call{i}").mkdir()
        files.append(tmp_path / f"call{i}" / "gpu_check.json")
        files[-1].write_text(json.dumps(call))
        origin = {"command": "scripts/gpu_check.sh OUT", "commit": "abc1234", "date": "2026-11-27", "hardware": "H100"}
        (tmp_path / f"call{i}" / "manifest.json").write_text(json.dumps({"files": {"gpu_check.json": origin}}))
    out = tmp_path / "all.json"
    proc = run_cli("scripts/gpu_report.py", out, "--merge", *files, timeout=60)
    assert proc.returncode == 0, proc.stderr
    merged = json.loads(out.read_text())
    assert set(merged["parts"]) == {"paper", "tests", "bench_vit"}
    assert merged["paper"] == paper  # the second call's null does not erase it
    assert merged["tests"]["tests"] == 9
    assert "9.1 s per class" in proc.stdout and "part bench_vit: exit 0" in proc.stdout
    entry = json.loads((tmp_path / "manifest.json").read_text())["files"]["all.json"]  # the calls' origin, kept
    assert (entry["commit"], entry["hardware"]) == ("abc1234", "H100") and "--merge" in entry["command"]
