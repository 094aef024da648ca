"""Where a stored result comes from: the command, the commit, the date and the hardware.

Every script that writes a result (scripts/leaderboard.py, frontier.py, benchmark.py, gpu_report.py,
digits_claim.py, ab_cpu_step.py) records each file it writes in `manifest.json` beside it:

    {"files": {"leaderboard.json": {"command": "python scripts/leaderboard.py ...",
                                     "commit": "0b13161...", "date": "2026-11-30T04:00:00Z",
                                     "hardware": "AMD EPYC, 2 threads; torch 2.14.1"}, ...}}

so a result copied into docs/results/ keeps its origin. Paths inside results are relative
(`portable`): a result names no folder of the machine that made it.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from pii.errors import ConfigError
from pii.files import write_json
from pii.models import cpu
from pii.models.cpu import DISPATCH_VARIABLES

MANIFEST = "manifest.json"
REPO = Path(__file__).resolve().parents[2]  # a checkout's root (pii/eval/ -> pii/ -> the root)


def commit() -> str:
    """The checkout's commit, with `+uncommitted` when tracked files differ from it. Outside a git
    checkout (a copied tree on a GPU machine): $PII_COMMIT, else "unknown"."""
    fallback = os.environ.get("PII_COMMIT") or "unknown"

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return fallback
        changed = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return fallback
    return head.stdout.strip() + ("+uncommitted" if changed else "")


def hardware(device: torch.device | str | None = None) -> str:
    """The machine in words: the GPU when `device` is CUDA, else the CPU and its threads; torch's version."""
    device = torch.device(device) if device is not None else None
    if device is not None and device.type == "cuda":
        what = f"{torch.cuda.get_device_name(device)}, {cpu.model_name()} host"
    else:
        what = f"{cpu.model_name()}, {torch.get_num_threads()} threads of {os.cpu_count()} cores"
    return f"{what}; torch {torch.__version__}"


def command(argv: list[str] | None = None) -> str:
    """This process's command line as typed at the checkout's root: the dispatch variables set
    (DISPATCH_VARIABLES), the script, and any absolute path under the working directory made relative."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve()
    env = [f"{name}={os.environ[name]}" for name in DISPATCH_VARIABLES if os.environ.get(name)]
    head = env + ["python", script.relative_to(REPO).as_posix() if script.is_relative_to(REPO) else script.name]
    cwd = Path.cwd().resolve()

    def relative(arg: str) -> str:
        path = Path(arg).resolve() if Path(arg).is_absolute() else None
        return path.relative_to(cwd).as_posix() if path is not None and path.is_relative_to(cwd) else arg

    return shlex.join(head + [relative(a) for a in argv[1:]])


def portable(path: str | Path, roots: list[Path]) -> str:
    """`path` as `<root's name>/<the rest>` for the first of `roots` that holds it (the root's name
    says which of several it came from), else its own name: no folder of the machine that wrote it."""
    path = Path(path).resolve()
    for root in (Path(r).resolve() for r in roots):
        if path.is_relative_to(root):
            return (Path(root.name) / path.relative_to(root)).as_posix()
    return path.name


def record(files: list[Path], device: torch.device | str | None = None, argv: list[str] | None = None,
           **fields: str) -> None:
    """Add each of `files` to the manifest.json of its folder: this process's command, commit, date
    and hardware (`fields` replace any of them, e.g. the hardware a merged report was measured on).
    An entry of the same name is replaced."""
    entry = {"command": command(argv), "commit": commit(),
             "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "hardware": hardware(device), **fields}
    for path in map(Path, files):
        manifest = path.parent / MANIFEST
        data = read(manifest.parent)
        data.setdefault("files", {})[path.name] = entry
        write_json(manifest, data)


def read(folder: Path) -> dict:
    """A folder's manifest ({"files": {name: entry}}), empty when it has none."""
    manifest = Path(folder) / MANIFEST
    if not manifest.is_file():
        return {}
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"{str(manifest)!r} cannot be read ({type(err).__name__}); repair or remove it, "
                          f"or write elsewhere") from None
    if not isinstance(data, dict) or not isinstance(data.get("files", {}), dict):
        raise ConfigError(f"{str(manifest)!r} is not a manifest (a files table); repair or remove it, or write elsewhere")
    return data
