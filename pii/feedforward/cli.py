"""`train_invert.py` / `pii-train-invert`: thin Hydra entry point around `train_invert(cfg)`.

Its configs live in conf/train_invert/; conf/ is searched after them, so that the `model` group
(any classifier of invert.py) is available as well.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from pii import CONF_DIR
from pii.errors import ConfigError
from pii.feedforward.config import SEARCHPATH, TRAIN_INVERT_CONF_DIR, check_train_invert
from pii.run.cli import ending, launch, planned
from pii.run.compose import hydra_arg


@hydra.main(version_base="1.3", config_path=TRAIN_INVERT_CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> None:
    """Hydra's own main, for its commands that only print (pii.run.cli.SHOWS): they never reach here."""
    raise RuntimeError("train_invert.py runs through pii.run.cli.launch")


def train_invert_job(cfg: DictConfig) -> float:
    """One train_invert.py run (or sweep job) in Hydra's job, of the config the preflight checked."""
    from pii.feedforward.runner import train_invert

    with ending(continue_hint(cfg) if cfg.mode == "train" else ""):
        metrics = train_invert(cfg, checked=True)
    return metrics.get("eval", {}).get("logits", {}).get("retrieval_features", 0.0) if metrics else 0.0


def continue_hint(cfg: DictConfig) -> str:
    """How to continue this run after an interruption or a refused write: its overrides, resume=true."""
    from hydra.core.hydra_config import HydraConfig

    task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    command = ["python train_invert.py", *(shlex.quote(o) for o in task if not o.startswith("resume=")),
               "resume=true", hydra_arg("hydra.run.dir", str(cfg.output_dir))]
    return f"the checkpoints are saved; continue with: {' '.join(command)}"


def check_job(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """Preflight of one train_invert.py job: ranges, then the choices the code knows (conditions, ...),
    then the files it starts from."""
    from pii.feedforward.runner import check, check_files
    from pii.models.device import available_device

    check_train_invert(cfg)
    check(cfg)
    available_device(str(cfg.device))
    check_files(cfg, Path(str(cfg.hydra.run.dir)).expanduser())
    return cfg


def train_invert_main() -> None:
    with ending(), planned(sys.argv[1:], TRAIN_INVERT_CONF_DIR, "config", check_job, (CONF_DIR,)) as plan:
        if plan is None:  # --help, --cfg, ...: Hydra prints (conf/ searched as well), nothing is written
            if not any(a.startswith("hydra.searchpath") for a in sys.argv[1:]):
                sys.argv.append(SEARCHPATH)
            return _main()
        cfg = plan.cfg
        if not (cfg.resume and cfg.mode == "train"):
            return launch(plan, train_invert_job, resume_hint=lambda d: f"resume=true {hydra_arg('hydra.run.dir', d)}")
        if plan.multirun:
            raise ConfigError("resume=true continues one run (hydra.run.dir=<its directory>); it does not go with -m")
        from pii.feedforward.runner import finished

        run_dir = Path(str(cfg.hydra.run.dir)).expanduser()
        if finished(cfg, run_dir) is not None:  # nothing left to train: the run is left as it is
            print(f"{run_dir} is a finished run (metrics.json covers schedule.steps); nothing to resume", file=sys.stderr)
            return
        launch(plan, train_invert_job, continuing=True)
