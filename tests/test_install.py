"""A non-editable install (what `pip install .` or a wheel gives) carries its configs: pii-invert and
pii-train-invert compose from inside the installed package, run from outside the repo, offline."""

import glob
import os
import shutil
import subprocess
import sys

from conftest import ROOT


def test_a_non_editable_install_finds_its_configs_outside_the_repo(tmp_path):
    src, site, elsewhere = tmp_path / "src", tmp_path / "site", tmp_path / "elsewhere"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):  # only what the build reads: no build/ left in the repo
        shutil.copy(ROOT / name, src / name)
    for name in ("pii", "conf", "hydra_plugins"):
        shutil.copytree(ROOT / name, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
                              "--no-compile", "--quiet", "--target", str(site), str(src)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    installed = {p.relative_to(site).as_posix() for top in ("pii", "hydra_plugins") for p in (site / top).rglob("*")
                 if p.suffix in (".py", ".yaml")}
    expected = {p.relative_to(ROOT).as_posix() for top in ("pii", "hydra_plugins") for p in (ROOT / top).rglob("*.py")}
    expected |= {f"pii/conf/{p}" for p in glob.glob("**/*.yaml", root_dir=ROOT / "conf", recursive=True)}
    assert installed == expected

    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}  # the installed copy, not this checkout

    def run(*args):
        proc = subprocess.run(args, cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc.stdout

    out = run(sys.executable, "-c", "import pii, pii.run.compose as c, pii.feedforward.config as f; "
              "print(pii.__file__, c.CONF_DIR, c.compose(['model=vit_b32']).model.name, "
              "f.compose_train_invert([]).data.name)")
    module, conf, model, data = out.split()
    assert module == str(site / "pii" / "__init__.py") and conf == str(site / "pii" / "conf")
    assert (model, data) == ("vit_base_patch32_224.augreg_in21k_ft_in1k", "digits")
    assert "name: tf_efficientnet_lite2" in run(str(site / "bin" / "pii-invert"), "--cfg", "job")
    assert "JobSweeper" in run(str(site / "bin" / "pii-invert"), "--info", "plugins")  # Hydra finds pii's sweeper
    assert "name: digits" in run(str(site / "bin" / "pii-train-invert"), "--cfg", "job")
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # --cfg runs nothing
