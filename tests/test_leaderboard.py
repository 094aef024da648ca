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
    proc = run_cli("invert.py", "-m", f"experiment={','.join(METHODS)}", *RANDOM_TINY, "schedule.stages=1", "schedule.steps=1",
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
