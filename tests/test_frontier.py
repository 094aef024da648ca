"""scripts/frontier.py: each budget a resumable invert.py sweep of the methods; judged quality against
seconds per class per (method, budget), each method's knee, the table, JSON, plot and manifest."""

import json

import pytest
from conftest import run_cli
from PIL import Image

from pii.eval import results
from pii.eval.frontier import COLOURS, knee, knees, points
from tests.test_resume import TINY_JUDGE
from tests.tiny import RANDOM_TINY, made_up_result

FILES = {"frontier.md", "frontier.json", "frontier.png"}


def frontier(out, *extra, timeout=900):
    """2 methods (pii, pii_fourier: the tiny overrides set the jitter that maco turns off) x 2 budgets (1 and 2
    steps in one stage) on the tiny model, judged by a tiny judge."""
    return run_cli("scripts/frontier.py", "--out", out, "--methods", "pii,pii_fourier", "--classes", "none",
                   "--budget", "s1: schedule.steps=1", "--budget", "s2: schedule.steps=2",
                   *RANDOM_TINY, "schedule.stages=1", *TINY_JUDGE, *extra, timeout=timeout, env={"OMP_NUM_THREADS": "1"})


def test_a_frontier_runs_each_method_at_each_budget_reports_and_continues_a_stopped_sweep(tmp_path):
    out = tmp_path / "frontier"
    proc = frontier(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = json.loads((out / "frontier.json").read_text())
    # each run at its (method, budget): the budget's steps (1 stage) are what the run did
    assert sorted((p["method"], p["budget"], p["steps"]) for p in board["points"]) == [
        ("pii", "s1", 1), ("pii", "s2", 2), ("pii_fourier", "s1", 1), ("pii_fourier", "s2", 2)]
    for p in board["points"]:
        assert p["judge"] == "timm" and 0 <= p["top1"] <= 1 and 0 <= p["mean_probability"] <= 1
        assert p["seconds_per_class"] > 0 and p["images"] == 2 and p["classes_per_run"] == 2
    assert set(board["knees"]) == {"pii", "pii_fourier"}
    table = (out / "frontier.md").read_text()
    assert "| pii | s2 |" in table and "| pii_fourier | s1 |" in table and "- pii: " in table
    plot = Image.open(out / "frontier.png").convert("RGB")
    colours = {colour for _, colour in plot.getcolors(1 << 20)}
    assert all(tuple(int(c[i:i + 2], 16) for i in (1, 3, 5)) in colours for c in COLOURS[:2])  # a line per method
    entries = json.loads((out / "manifest.json").read_text())["files"]
    assert set(entries) == FILES
    assert all(e["command"].startswith("python scripts/frontier.py --out ") and e["commit"] for e in entries.values())
    assert str(tmp_path) not in (out / "frontier.json").read_text()  # runs named from the sweeps' folder

    # one job lost its result: the same command runs that job only
    finished = sorted(out.glob("sweeps/*/*/metrics.json"))
    assert len(finished) == 4
    lost = next(p for p in finished if "s2" == p.parent.parent.name and "experiment=pii_fourier" in p.parent.name)
    lost.unlink()
    before = {p: p.stat().st_mtime_ns for p in finished if p != lost}
    proc = frontier(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "budget s1: every job finished; skipped" in proc.stderr
    assert "finished jobs skipped: 0" in proc.stdout + proc.stderr  # the s2 sweep continued, its pii job skipped
    assert lost.is_file() and {p: p.stat().st_mtime_ns for p in before} == before

    # --report reads them again elsewhere
    proc = run_cli("scripts/frontier.py", "--report", out / "sweeps", "--out", tmp_path / "again", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads((tmp_path / "again" / "frontier.json").read_text())
    assert len(again["points"]) == 4 and set(json.loads((tmp_path / "again" / "manifest.json").read_text())["files"]) == FILES


def test_runs_are_grouped_by_method_and_the_sweep_folder_of_their_budget(tmp_path):
    for budget, method, seed, seconds in (("fast", "pii", 0, 1.0), ("fast", "pii", 1, 3.0), ("fast", "maco", 0, 5.0),
                                          ("slow", "pii", 0, 8.0)):
        run = made_up_result({1: "1_a.png", 2: "2_b.png"})
        run.config.update(method=method, seed=seed)
        run.seconds_per_class = seconds
        job = tmp_path / "sweeps" / budget / f"{method}_{seed}"
        job.mkdir(parents=True)
        results.write(job / "metrics.json", run)
    found = {(p["method"], p["budget"]): p for p in points([tmp_path / "sweeps"])}
    assert sorted(found) == [("maco", "fast"), ("pii", "fast"), ("pii", "slow")]
    pooled = found[("pii", "fast")]
    assert pooled["seeds"] == [0, 1] and pooled["images"] == 4 and pooled["seconds_per_class"] == pytest.approx(2.0)
    assert pooled["judge"] == "lite" and pooled["mean_probability"] == pytest.approx(0.25) and pooled["top1"] == 0
    assert sorted(pooled["runs"]) == ["sweeps/fast/pii_0", "sweeps/fast/pii_1"]


def test_the_knee_is_the_cheapest_point_whose_doubling_adds_less_than_the_gain():
    assert knee([(1, 0.1), (2, 0.3), (4, 0.31), (8, 0.5)], 0.02) == 1  # 2 s -> 4 s adds 0.01
    assert knee([(8, 0.5), (2, 0.3), (1, 0.1), (4, 0.31)], 0.02) == 1  # in any order: the index given
    assert knee([(1, 0.1), (2, 0.2), (4, 0.3)], 0.02) is None  # every doubling still pays
    assert knee([(1, 0.1)], 0.02) is None
    # times that do not double: the gain per doubling to the next point (0.03 over 4x: 0.015 per doubling)
    assert knee([(10, 0.5), (40, 0.53), (80, 0.6)], 0.02) == 0
    assert knee([(10, 0.5), (15, 0.515), (30, 0.6)], 0.02) is None  # 0.015 over 1.5x is 0.026 per doubling
    points = [{"method": m, "budget": b, "classes": "benchmark20", "seconds_per_class": s, "mean_probability": p}
              for m, b, s, p in (("pii", "a", 1, 0.1), ("pii", "b", 2, 0.3), ("pii", "c", 4, 0.31),
                                 ("maco", "a", 1, 0.1), ("maco", "b", 2, 0.5))]
    assert knees(points, 0.02) == {"pii": {"budget": "b", "seconds_per_class": 2}, "maco": None}


def test_several_seeds_are_one_sweep_whose_runs_the_report_pools(tmp_path):
    """--seed 0,1: each budget's sweep runs every method at both seeds (pooled by the report, as above)."""
    from pii.run.frontier import Budget, parse_seeds, sweep_arguments

    assert parse_seeds("0, 1") == [0, 1] and parse_seeds(3) == [3]
    argv = sweep_arguments(Budget("b", ["schedule.steps=5"]), ["pii", "maco"], "holdout20", parse_seeds("0,1"), [],
                           tmp_path / "b")
    assert "seed=0,1" in argv and "experiment=pii,maco" in argv and argv.count("-m") == 1


@pytest.mark.parametrize("args,why", [
    (["--methods", "pii,nonexistent"], "unknown method 'nonexistent'"),
    (["--budgets", "EMPTY"], "no budgets"),
    (["--budget", "steps 50"], "give a name, a colon"),
    (["--budget", "s1: schedule.stepz=1"], "schedule.stepz"),
    (["--report", "EMPTY_DIR"], "no finished runs"),
    (["--seed", "0,x"], "whole numbers"),
    (["--seed", "1,1"], "each seed once"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, why):
    (tmp_path / "budgets.yaml").write_text("budgets: {}\n")
    (tmp_path / "runs").mkdir()
    args = [{"EMPTY": tmp_path / "budgets.yaml", "EMPTY_DIR": tmp_path / "runs"}.get(a, a) for a in args]
    out = tmp_path / "out"
    proc = run_cli("scripts/frontier.py", "--out", out, "--methods", "pii", *args, *RANDOM_TINY, timeout=300) \
        if "--report" not in args else run_cli("scripts/frontier.py", *args, "--out", out, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], proc.stderr[-3000:]
    assert not (out / "sweeps").exists() and not (out / "frontier.md").exists()
