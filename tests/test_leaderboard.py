"""A sweep of the method presets (-m experiment=pii,pii_fourier,...) runs every method; scripts/leaderboard.py
makes the table and grid."""

import json
import re

from conftest import compose_config, run_cli

from tests.tiny import RANDOM_TINY

METHODS = ["pii", "pii_fourier", "lucent", "maco", "deepinversion_noise"]


def test_method_presets_label_themselves():
    for name in METHODS:
        assert compose_config([f"experiment={name}", "output_dir=/x"]).method == name
    assert compose_config(["output_dir=/x"]).param.name == "pixel"  # the paper stays the default
    assert compose_config(["experiment=pii_fourier", "output_dir=/x"]).param.name == "fourier"
    maco = compose_config(["experiment=maco", "output_dir=/x"])
    assert (maco.param.name, maco.optimizer._target_, maco.optimizer.lr) == ("maco", "torch.optim.NAdam", 1.0)


def test_a_sweep_of_the_methods_runs_each_and_the_leaderboard_reads_them(tmp_path):
    sweep = tmp_path / "methods"
    # each method keeps its own transforms: lucent's and MACO's have no jitter to shorten
    tiny = [o for o in RANDOM_TINY if not o.startswith("augmentation.jitter.")]
    proc = run_cli("invert.py", "-m", f"experiment={','.join(METHODS)}", *tiny, "schedule.stages=1", "schedule.steps=1",
                   "verifier=none", f"hydra.sweep.dir={sweep}", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out, figures = tmp_path / "board", tmp_path / "figures"
    proc = run_cli("scripts/leaderboard.py", sweep, "--out", out, "--grid", figures / "board.jpg", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    board = json.loads((out / "leaderboard.json").read_text())
    assert [r["method"] for r in board["rows"]] == METHODS
    assert all(-4 < r["spectral_slope"] < 1 and r["seconds_per_class"] >= 0 for r in board["rows"])
    assert "spectral slope" in (out / "leaderboard.md").read_text() and (figures / "board.jpg").is_file()
    # runs named from the sweep given (its name, then the job): no folder of this machine
    assert sorted(board["runs"]) == sorted(f"methods/{job.name}" for job in sweep.iterdir() if (job / "metrics.json").is_file())
    assert str(tmp_path) not in (out / "leaderboard.json").read_text()
    # where each file came from, beside it
    for folder, names in ((out, {"leaderboard.md", "leaderboard.json"}), (figures, {"board.jpg"})):
        entries = json.loads((folder / "manifest.json").read_text())["files"]
        assert set(entries) == names
        for entry in entries.values():
            assert entry["command"].startswith("python scripts/leaderboard.py ") and entry["commit"] and entry["hardware"]
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["date"])


def test_a_run_of_unknown_time_is_not_ranked_fast_and_a_bad_time_is_skipped(tmp_path):
    """metrics.json is read back whoever wrote it: a time that is not a number is skipped with a
    warning; a run whose time is unknown (null: resumed from a checkpoint that did not keep it) makes
    its row's time unknown, never 0."""
    import torch
    from torchvision.utils import save_image

    from pii.eval import results
    from tests.tiny import made_up_result

    runs = tmp_path / "runs"
    for name, seconds in (("timed", 2.0), ("unknown", None), ("bad", "fast")):
        run = made_up_result({1: "1_a.png", 2: "2_b.png"})
        run.seconds, run.seconds_per_class = (seconds, None if seconds is None else 1.0)
        (runs / name).mkdir(parents=True)
        results.write(runs / name / "metrics.json", run)
        for image in ("1_a.png", "2_b.png"):
            save_image(torch.rand(3, 8, 8), runs / name / image)
    data = json.loads((runs / "bad" / "metrics.json").read_text())
    data["seconds_per_class"] = "fast"
    (runs / "bad" / "metrics.json").write_text(json.dumps(data))
    proc = run_cli("scripts/leaderboard.py", runs, "--out", tmp_path / "board", timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "bad/metrics.json" in proc.stderr and "Traceback" not in proc.stderr
    board = json.loads((tmp_path / "board" / "leaderboard.json").read_text())
    assert len(board["runs"]) == 2 and [r["seconds_per_class"] for r in board["rows"]] == [None]
    assert (tmp_path / "board" / "leaderboard.md").read_text().rstrip().endswith("| unknown |")
