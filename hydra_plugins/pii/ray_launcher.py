"""hydra/launcher=ray (conf/hydra/launcher/ray.yaml): Hydra's Ray launcher (hydra-ray-launcher, the
`ray` extra), with what it lacks for a cluster that is already running. Without the extra this module
defines nothing, and Hydra's plugin scan stays quiet."""

from __future__ import annotations

try:
    from hydra_plugins.hydra_ray_launcher.ray_launcher import RayLauncher as _HydraRayLauncher
except ImportError:
    _HydraRayLauncher = None

if _HydraRayLauncher is not None:
    from omegaconf import open_dict

    # the object store of the Ray the plugin starts itself (its own default, for small CI machines)
    LOCAL_OBJECT_STORE = 78643200

    class RayLauncher(_HydraRayLauncher):
        """Hydra's Ray launcher, which starts a local Ray unless `ray.init.address` names a cluster
        (`auto`, or the head's `<ip>:6379`), plus:
        - joining a cluster works: the plugin always asks for a small object store, which Ray
          refuses when it joins one (ValueError), so it is asked for only when Ray starts here;
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
