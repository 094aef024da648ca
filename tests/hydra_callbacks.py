"""A Hydra callback for tests: each job's return value, written beside its outputs
(Hydra hands return values to callbacks, not to the command line)."""

import json
from pathlib import Path

from hydra.experimental.callback import Callback


class RecordReturnValue(Callback):
    def on_job_end(self, config, job_return, **kwargs) -> None:
        out = Path(config.hydra.runtime.output_dir) / "return_value.json"
        out.write_text(json.dumps(job_return.return_value))
