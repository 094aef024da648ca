"""Hydra callbacks for tests: each job's return value, written beside its outputs; the GPUs it was given
(Hydra hands return values to callbacks, not to the command line)."""

import json
import os
from pathlib import Path

from hydra.experimental.callback import Callback


class RecordReturnValue(Callback):
    def on_job_end(self, config, job_return, **kwargs) -> None:
        out = Path(config.hydra.runtime.output_dir) / "return_value.json"
        out.write_text(json.dumps(job_return.return_value))


class RecordVisibleDevices(Callback):
    """The GPUs the job's launcher gave it (Ray sets CUDA_VISIBLE_DEVICES for each task)."""

    def on_job_end(self, config, job_return, **kwargs) -> None:
        out = Path(config.hydra.runtime.output_dir) / "visible_devices.txt"
        out.write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "(unset)"))
