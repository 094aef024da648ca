"""A sweep of the method presets (-m experiment=pii,pii_fourier,...) runs every method; scripts/leaderboard.py
makes the table and grid."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import compose_config

from tests.tiny import RANDOM_TINY

ROOT = Path(__file__).resolve().parent.parent
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
    cmd = [sys.executable, "invert.py", "-m", f"experiment={','.join(METHODS)}", *RANDOM_TINY, "schedule.stages=1",
           "schedule.steps=1", "verifier=none", f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "board"
    proc = subprocess.run([sys.executable, "scripts/leaderboard.py", str(sweep), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert [r["method"] for r in rows] == METHODS
    assert all(-4 < r["spectral_slope"] < 1 and r["seconds_per_class"] >= 0 for r in rows)
    assert "spectral slope" in (out / "leaderboard.md").read_text() and (out / "leaderboard_grid.jpg").is_file()
