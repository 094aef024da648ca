"""invert.py's default hydra/sweeper (conf/hydra/sweeper/pii.yaml); the logic is pii.run.sweep."""

from pii.run import sweep
from pii.run.hydra_private import BasicSweeper


class JobSweeper(BasicSweeper):
    """Hydra's basic sweeper (every combination of the swept values), plus: classes_per_job splits a
    class list into jobs; a job that fails fails alone and the sweep's summary names it; resume=<sweep
    dir> continues a sweep (pii.run.sweep, docs/cluster.md)."""

    def setup(self, *, hydra_context, task_function, config) -> None:
        super().setup(hydra_context=hydra_context, task_function=sweep.FailsAlone(task_function), config=config)

    def sweep(self, arguments, jobs=None):
        """`jobs`: the sweep's jobs as the entry point's preflight planned and checked them (else planned here)."""
        return sweep.run(self.launcher, self.hydra_context.config_loader, self.config, arguments, self.max_batch_size,
                         jobs=jobs)
