"""hydra/launcher=ray: Hydra's Ray launcher (hydra-ray-launcher, the `ray` extra) with what it lacks
for a cluster (docs/cluster.md). This module stores its own `hydra/launcher/ray` config in Hydra's
ConfigStore, in place of the plugin's: the same settings, this launcher as `_target_`.

Without an address the launcher starts a local Ray on this machine, sized to its cores; to join a
cluster: `hydra.launcher.ray.init.address=auto` (on one of its nodes) or `=<head ip>:6379`. Jobs at
once: the cluster's CPUs over `hydra.launcher.ray.remote.num_cpus` (1), and GPUs over `num_gpus`.
Ray sets each job's OMP_NUM_THREADS to its CPUs, which torch follows.

Without the extra this module defines nothing, and Hydra's plugin scan stays quiet."""

# no `from __future__ import annotations`: Hydra's plugin scan runs this module before it is in
# sys.modules, where dataclasses would look up string annotations
from dataclasses import dataclass

try:
    from hydra_plugins.hydra_ray_launcher import _config as plugin_config  # stores the plugin's config first
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as HydraRayLauncher
except ImportError:
    HydraRayLauncher = None

if HydraRayLauncher is not None:
    from hydra.core.config_store import ConfigStore
    from omegaconf import open_dict

    # the object store of the Ray that the plugin starts itself (its own default, for small CI machines)
    LOCAL_OBJECT_STORE = 78643200

    class RayLauncher(HydraRayLauncher):
        """Hydra's Ray launcher, plus:
        - joining a running cluster works: the plugin always asks for a small object store, which
          Ray refuses when it joins one (ValueError), so it is asked for only when Ray starts here;
        - each job gets one GPU when the cluster has GPUs, unless `ray.remote.num_gpus` says
          otherwise (without it Ray hides the GPUs from a job, which would run on the CPU)."""

        def launch(self, job_overrides, initial_job_idx):
            import ray
            from hydra_plugins.hydra_ray_launcher._launcher_util import start_ray

            with open_dict(self.ray_cfg):
                joining = bool(self.ray_cfg.init.get("address"))
                self.ray_cfg.init.setdefault("object_store_memory", None if joining else LOCAL_OBJECT_STORE)
                start_ray(self.ray_cfg.init)
                if self.ray_cfg.remote.get("num_gpus") is None and ray.cluster_resources().get("GPU", 0) > 0:
                    self.ray_cfg.remote.num_gpus = 1
            return super().launch(job_overrides, initial_job_idx)

    @dataclass
    class RayLauncherConf(plugin_config.RayLauncherConf):
        _target_: str = f"{__name__}.RayLauncher"

    ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayLauncherConf, provider="pii")
