"""Tests run offline: no W&B server, no model hub. The helpers that many test files share live here:
the checkout's ROOT, the real config composed (`compose_config`, `tiny_config`), entry points run as a
user runs them (`run_cli`), a run stopped after a stage (`stopped_after_stage`, `as_hydra_run`)."""

import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
# train_invert's classifier cache: the tests' quick classifiers never land in the shared default one
import tempfile

os.environ.setdefault("PII_CLASSIFIER_CACHE", tempfile.mkdtemp(prefix="pii-test-classifiers-"))
# precision=auto's timings (pii.models.calibration): the tests' runs never read or write the user's
os.environ["PII_CACHE"] = tempfile.mkdtemp(prefix="pii-test-cache-")

import multiprocessing
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import pii.run.config  # noqa: F401  (registers the schemas that conf/config.yaml's defaults name)
from pii import CONF_DIR

ROOT = Path(__file__).resolve().parent.parent


# Third-party modules a command imports at start. Each command runs in a fresh process forked from a
# server that imported these once: starting the interpreter and importing torch cost seconds per
# command on 2 cores, and the bad-input tests alone run over a hundred commands.
PRELOAD = ["torch", "torchvision", "timm", "hydra", "hydra.core.global_hydra", "omegaconf", "numpy", "PIL.Image",
           "tqdm", "yaml"]
FORKSERVER = multiprocessing.get_context("forkserver")
FORKSERVER.set_forkserver_preload(PRELOAD)  # the server starts with the first command; later ones reuse it


# Variables torch (and its OpenMP, MKL, oneDNN) reads once, when it is imported: a process forked from
# the server, which imported torch under the tests' environment, would ignore them.
IMPORT_TIME_VARIABLES = ("OMP_", "MKL_", "KMP_", "GOMP_", "OPENBLAS_", "ATEN_CPU_CAPABILITY", "ONEDNN_", "DNNL_",
                         "TORCH_", "PYTORCH_", "CUDA_VISIBLE_DEVICES", "LD_PRELOAD", "MALLOC_")


def run_cli(*args, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python <script> <args>` in the checkout's root as a user types it (invert.py, train_invert.py,
    scripts/<name>.py), importing this checkout's pii; stdout and stderr captured as text. The script
    runs as __main__ in a new process (its own exit code, signals, globals), forked from a server that
    has imported the PRELOAD modules; where `env` sets a variable torch reads at import
    (IMPORT_TIME_VARIABLES) to another value than the server had, in a real interpreter, so that the
    variable counts. The ctrl-c, lock and install tests start real interpreters too."""
    args = [str(a) for a in args]
    if import_time_variables(env):
        return subprocess.run([sys.executable, *args], cwd=ROOT, env=cli_env(env), capture_output=True, text=True,
                              timeout=timeout)
    with tempfile.TemporaryDirectory() as captured:
        out, err = Path(captured) / "stdout", Path(captured) / "stderr"
        out.touch()
        err.touch()
        process = FORKSERVER.Process(target=_run_script, args=(args, cli_env(env), out, err))
        process.start()
        process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join()
            raise subprocess.TimeoutExpired([sys.executable, *args], timeout)
        return subprocess.CompletedProcess([sys.executable, *args], process.exitcode,
                                           out.read_text(errors="replace"), err.read_text(errors="replace"))


def import_time_variables(env: dict | None) -> list[str]:
    """The variables of `env` that torch reads at import and that differ from this process's."""
    return [key for key, value in (env or {}).items()
            if key.startswith(IMPORT_TIME_VARIABLES) and os.environ.get(key) != value]


def _run_script(args: list[str], env: dict, out: Path, err: Path) -> None:
    """In the forked process: what `python <args>` does once the interpreter is up."""
    import atexit
    import runpy
    import threading
    import traceback

    os.chdir(ROOT)
    os.environ.clear()
    os.environ.update(env)
    # the interpreter puts the script's folder first, then PYTHONPATH
    sys.path[:0] = [str((ROOT / args[0]).parent), *env.get("PYTHONPATH", "").split(os.pathsep)]
    sys.argv = list(args)
    with open(out, "w") as stdout, open(err, "w") as stderr:
        os.dup2(stdout.fileno(), 1)
        os.dup2(stderr.fileno(), 2)
    code = 0
    try:
        runpy.run_path(args[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001  (as the interpreter: the traceback, exit 1)
        traceback.print_exc()
        code = 1
    # what the interpreter does at exit, which a forked child would skip: join the threads and shut
    # the executors down (joblib's workers), then the atexit functions (W&B, logging)
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)


def cli_env(extra: dict | None = None) -> dict:
    """The environment of a command run from the checkout: its pii first on the import path, before
    any installed one (an editable install may point at another checkout)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, **(extra or {})}


@contextmanager
def stopped_after_stage(index: int):
    """Inside, an inversion stops with KeyboardInterrupt right after stage `index` (0-based) is
    saved, as if Ctrl-C had come then."""
    from pii.run import outputs

    save_stage = outputs.Saver.stage_done

    def stop(self, i, stage, image):
        save_stage(self, i, stage, image)
        if i == index:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outputs.Saver, "stage_done", stop)
        yield


def as_hydra_run(cfg, out_dir: Path):
    """`cfg`, saved in `out_dir` as Hydra saves a job's config (what resume= reads)."""
    (out_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, out_dir / ".hydra" / "config.yaml")
    return cfg


def file_bytes(root: Path) -> dict:
    """Every file under `root` and its bytes: compare before and after to see that nothing changed."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


class Payload:
    """Unpickling this would run code."""

    def __reduce__(self):
        return (print, ("this ran at load time",))


def compose_config(overrides=(), config_name: str = "config"):
    """The real config, composed as invert.py would, with `overrides`."""

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=config_name, overrides=list(overrides))


TINY = ["schedule.stages=2", "schedule.steps=3", "augmentation.ensemble.size=2", "device=cpu"]


@pytest.fixture
def tiny_config(tmp_path):
    """A shrunk real config: the embedded Lite0 at 64 px, 2 stages of 3 steps, outputs in tmp_path."""

    def make(*overrides):
        return compose_config([*TINY, "model.input_size=64", f"output_dir={tmp_path}", *overrides])

    return make
