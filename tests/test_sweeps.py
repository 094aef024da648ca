"""Sweeps as presets, a real 2-job joblib multirun, and its gallery (grid,
page, and the page opened in a headless Chromium)."""

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from pii import CONF_DIR
from pii.eval import gallery
from tests.test_tracking import JUDGE
from tests.tiny import RANDOM_TINY
from tests.wandb_file import run_file, run_record

SWEEPS = {
    "sweep_ensemble": {"augmentation.ensemble.size": "1,2,4,8,16,32,64"},
    "sweep_color_shift": {"augmentation.color_shift.alpha": "0,0.25,0.5,1.0",
                          "augmentation.color_shift.beta": "0,0.25,0.5,1.0"},
    "sweep_schedule": {"schedule": "zoom_centering,zoom,centering,none"},
    "sweep_tv": {"augmentation": "pii,no_color_shift", "loss.tv_weight": "0,0.03,0.3,3.0"},
    "sweep_models": {"model": "efficientnet_lite0,resnet50,vit_b32,deit,mixer_b16,resmlp_36,swin,pit,"
                              "convit_tiny,twins_pcpvt"},
}


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_sweep_preset_combines_with_the_fast_preset(name):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=[fast,{name}]"], return_hydra_config=True)
        fast = compose("config", overrides=["experiment=fast"])
    assert dict(cfg.hydra.sweeper.params) == SWEEPS[name]
    assert cfg.schedule.steps == fast.schedule.steps < 400  # the fast preset still applies
    assert cfg.augmentation.ensemble == fast.augmentation.ensemble and fast.augmentation.ensemble.size < 32
    assert cfg.param.name == fast.param.name == "fourier"
    if name == "sweep_tv":
        assert cfg.loss.tv_weight > 0


def test_the_sweep_preflight_splits_jobs_as_hydra_does():
    """pii.run.compose.sweep_jobs reaches into hydra._internal (BasicSweeper.split_arguments), which Hydra may
    change in any release: if it did, this fails and says where."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from pii.run.compose import sweep_jobs

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        try:
            jobs = sweep_jobs(GlobalHydra.instance().config_loader(),
                              ["loss.tv_weight=0,1", "seed=3", "loss.tv_weight=0.5,2", "model=a,b"])
        except Exception as err:  # noqa: BLE001 - any failure here is the upgrade's
            pytest.fail(f"hydra-core {hydra.__version__} broke pii.run.compose.sweep_jobs, the sweep preflight's use of "
                        f"hydra._internal.core_plugins.basic_sweeper.BasicSweeper.split_arguments: {err!r}")
    # the later value of a key wins (the command line over the sweeper's params), in the order Hydra launches
    assert jobs == [["loss.tv_weight=0.5", "seed=3", "model=a"], ["loss.tv_weight=0.5", "seed=3", "model=b"],
                    ["loss.tv_weight=2", "seed=3", "model=a"], ["loss.tv_weight=2", "seed=3", "model=b"]]


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    """`invert.py -m` with the joblib launcher: the ensemble preset narrowed to 2 jobs, W&B offline."""
    sweep_dir = tmp_path_factory.mktemp("sweep") / "ensemble"
    proc = run_cli("invert.py", "-m", "hydra/launcher=parallel", "experiment=sweep_ensemble", *RANDOM_TINY,
                   "augmentation.ensemble.size=1,2", "schedule.stages=2", "logger=wandb", *JUDGE,
                   "+hydra.callbacks.record._target_=tests.hydra_callbacks.RecordReturnValue",
                   f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}_job",  # short: many overrides
                   env={"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep_dir


def test_joblib_multirun_runs_both_jobs_with_outputs_in_one_wandb_group(multirun):
    jobs = sorted(p for p in multirun.iterdir() if (p / ".hydra").is_dir())
    assert [p.name for p in jobs] == ["0_job", "1_job"]
    sizes = []
    for job in jobs:
        metrics = json.loads((job / "metrics.json").read_text())
        sizes.append(metrics["ensemble_size"])
        assert all((job / c["image"]).is_file() for c in metrics["classes"]) and (job / "grid.png").is_file()
        run = run_record(run_file(job))
        assert run.run_group == "ensemble" and run.display_name == f"{len(sizes) - 1}_augmentation.ensemble.size={sizes[-1]}"
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        assert config["choices"]["model"] == "timm" and config["choices"]["augmentation"] == "pii"  # names to group by
        # the job's return value, what a sweeper optimises: the judged top-1
        assert json.loads((job / "return_value.json").read_text()) == metrics["judge"]["timm"]["top1"]
    assert sizes == [1, 2]


def test_report_writes_a_labelled_grid_and_a_page(multirun):
    grid_path, page_path = gallery.write_report(multirun, cell=64)
    jobs = gallery.collect(multirun)
    assert gallery.swept_keys(jobs) == ["augmentation.ensemble.size"]
    assert [gallery.row_label(j, ["augmentation.ensemble.size"]) for j in jobs] == ["ensemble.size=1", "ensemble.size=2"]
    grid = Image.open(grid_path).convert("RGB")
    assert grid.size == (200 + 2 * (64 + 6) + 6, 40 + 2 * (64 + 18 + 6) + 6)  # 2 rows x 2 classes
    # the second job's class-2 image sits in row 2, column 2
    cell = Image.open(jobs[1].image(2)).convert("RGB").resize((64, 64), Image.BILINEAR)
    x, y = 200 + 6 + 64 + 6, 40 + 64 + 18 + 6
    assert grid.crop((x, y, x + 64, y + 64)).tobytes() == cell.tobytes()
    text = page_path.read_text()
    assert 'id="metrics"' in text and text.count("<tr><td>") == 2 and "augmentation.ensemble.size=2" in text


def test_report_of_a_folder_of_sweeps_names_each_row_by_its_sweep(multirun, tmp_path):
    """scripts/frontier.py's <out>/sweeps/ (one sweep per budget): one grid of every sweep's jobs, each row
    named by its sweep, the first --columns classes only, written where --out says with links that work there."""
    import re

    for name in ("new", "old"):
        shutil.copytree(multirun, tmp_path / "sweeps" / name)
    out = tmp_path / "side_by_side"
    proc = run_cli("scripts/report.py", tmp_path / "sweeps", "--cell", "64", "--columns", "1", "--out", out, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = gallery.collect(tmp_path / "sweeps")
    keys = gallery.swept_keys(jobs)
    assert [gallery.row_label(j, keys) for j in jobs] == [f"sweep={s}, ensemble.size={n}" for s in ("new", "old")
                                                           for n in (1, 2)]
    assert Image.open(out / gallery.GRID).size == (200 + (64 + 6) + 6, 40 + 4 * (64 + 18 + 6) + 6)  # 4 rows x 1 class
    links = re.findall(r'<img src="([^"]+\.png)" width', (out / gallery.PAGE).read_text())
    assert links and all((out / link).is_file() for link in links)
    assert not (tmp_path / "sweeps" / gallery.GRID).exists()


def chromium() -> str:
    path = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    try:
        import playwright  # noqa: F401
    except ImportError:
        path = None
    if path is None:
        message = "the browser test needs Chromium (apt-get install chromium) and playwright (pip install playwright)"
        if os.environ.get("CI") == "true":
            pytest.fail("CI: " + message + "; .ci/run installs them")
        pytest.skip(message)
    return path


def test_report_page_shows_every_image_and_the_metrics_in_a_browser(multirun):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    _, page_path = gallery.write_report(multirun, cell=64)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=flags)
        try:
            page = browser.new_page()
            page.goto(page_path.as_uri(), wait_until="load")
            images = page.evaluate("Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth])")
            rows = page.evaluate("document.querySelectorAll('#metrics tbody tr').length")
            headers = page.evaluate("Array.from(document.querySelectorAll('#metrics th')).map(h => h.textContent)")
        finally:
            browser.close()
    assert len(images) == 1 + 2 * 2  # the grid, and each job's two class images
    assert all(width > 0 for _, width in images), images
    assert rows == 2 and "mean p" in headers and "overrides" in headers


def test_optuna_preset_searches_for_the_judged_top1_per_second(tmp_path):
    sweep_dir = tmp_path / "optuna"
    proc = run_cli("invert.py", "-m", "experiment=optuna", *RANDOM_TINY, *JUDGE, "hydra.sweeper.n_trials=2",
                   f"hydra.sweep.dir={sweep_dir}", "hydra.sweep.subdir=${hydra.job.num}",
                   "+hydra.callbacks.record._target_=tests.hydra_callbacks.RecordReturnValue",
                   env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = []
    for job in sorted(p for p in sweep_dir.iterdir() if (p / "metrics.json").is_file()):
        metrics = json.loads((job / "metrics.json").read_text())
        values.append(json.loads((job / "return_value.json").read_text()))
        assert values[-1] == pytest.approx(metrics["judge"]["timm"]["top1"] / metrics["seconds"])
        assert 0 <= metrics["config"]["augmentation"]["color_shift"]["alpha"] <= 1.5  # drawn from the preset's ranges
    assert len(values) == 2
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    assert best.name == "optuna" and best.best_value == pytest.approx(max(values))
