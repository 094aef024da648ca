"""The default hydra/sweeper of invert.py (conf/hydra/sweeper/pii.yaml): pii.run.sweep.JobSweeper."""

from pii.run import sweep


class JobSweeper(sweep.JobSweeper):
    __doc__ = sweep.JobSweeper.__doc__
