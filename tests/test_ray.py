"""hydra/launcher=ray (the `ray` extra, which `make test` installs): a sweep's jobs run as Ray tasks on a
cluster that is already running (started here once for the module: Ray takes seconds to start).
The cluster declares one GPU, a logical resource that needs no device: each job asks for it, so the
two jobs run one after the other, each with CUDA_VISIBLE_DEVICES set by Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from pii.run.sweep import SUMMARY
from tests.tiny import RANDOM_TINY

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def cluster() -> str:
    """The address of a local Ray cluster with 2 CPUs and 1 (logical) GPU, owned by this process."""
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
        import ray
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("CI: the Ray tests need the ray extra (pip install -e '.[ray]'; make install does)")
        pytest.skip("needs the ray extra: pip install -e '.[ray]'")
    context = ray.init(num_cpus=2, num_gpus=1, object_store_memory=78643200, include_dashboard=False,
                       log_to_driver=False)
    yield context.address_info["gcs_address"]
    ray.shutdown()


def test_a_sweep_runs_on_a_running_ray_cluster_one_gpu_per_job(cluster, tmp_path):
    sweep_dir = tmp_path / "ray"
    cmd = [sys.executable, "invert.py", "-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={cluster}",
           *RANDOM_TINY, "seed=0,1", "verifier=none", f"hydra.sweep.dir={sweep_dir}",
           "hydra.sweep.subdir=${hydra.job.num}_job",
           "+hydra.callbacks.record._target_=tests.hydra_callbacks.RecordVisibleDevices"]
    # Ray's workers import pii and tests from this checkout
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Connecting to existing Ray cluster at address: {cluster}" in proc.stderr  # joined, started none
    assert [job["state"] for job in json.loads((sweep_dir / SUMMARY).read_text())["jobs"]] == ["finished"] * 2
    seeds = []
    for k in range(2):
        job = sweep_dir / f"{k}_job"
        seeds.append(json.loads((job / "metrics.json").read_text())["config"]["seed"])
        assert OmegaConf.load(job / ".hydra" / "hydra.yaml").hydra.job.id == f"job_id_for_{k}"  # the Ray launcher's
        assert (job / "visible_devices.txt").read_text() == "0"  # the cluster's one GPU, given to each job
    assert seeds == [0, 1]
