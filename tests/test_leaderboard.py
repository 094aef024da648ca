"""experiment=sweep_methods runs every method recipe; scripts/leaderboard.py makes the table and grid."""

import json

from conftest import compose_config, run_cli

from tests.tiny import RANDOM_TINY

METHODS = ["pii", "pii_fourier", "lucent", "maco", "deepinversion_noise"]


def test_method_presets_are_recipes_and_label_themselves():
    for name in METHODS:
        a, b = compose_config([f"experiment={name}", "output_dir=/x"]), compose_config([f"recipe={name}", "output_dir=/x"])
        assert a == b and a.method == name
    assert compose_config(["output_dir=/x"]).param.name == "pixel"  # the paper stays the default
    assert compose_config(["experiment=pii_fourier", "output_dir=/x"]).param.name == "fourier"
    maco = compose_config(["experiment=maco", "output_dir=/x"])
    assert (maco.param.name, maco.schedule.optimizer, maco.schedule.lr) == ("maco", "nadam", 1.0)


def test_sweep_methods_runs_every_method_and_the_leaderboard_reads_them(tmp_path):
    sweep = tmp_path / "methods"
    proc = run_cli("invert.py", "-m", "experiment=sweep_methods", *RANDOM_TINY, "schedule.stages=1", "schedule.steps=1",
                   "verifier=none", f"hydra.sweep.dir={sweep}", env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "board"
    proc = run_cli("scripts/leaderboard.py", sweep, "--out", out, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert [r["method"] for r in rows] == METHODS
    assert all(-4 < r["spectral_slope"] < 1 and r["seconds_per_class"] >= 0 for r in rows)
    assert "spectral slope" in (out / "leaderboard.md").read_text() and (out / "leaderboard_grid.jpg").is_file()
