"""Files written whole or not at all, JSON that is strict, the images and YAML files a run left read
back, and the lock of a run directory.

Every checkpoint, JSON file, image and page pii writes goes through `write_atomic`: the bytes go to a
temporary file beside the target, which replaces the target only once it is complete. A write that
fails (a full disk, a file-size limit, a name the file system refuses) removes the temporary file,
leaves the earlier file as it was and raises pii.errors.WriteError, one line for the user.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, TYPE_CHECKING

from pii.errors import ConfigError, WriteError

if TYPE_CHECKING:  # this module imports no torch: every layer, and the CLI before torch, uses it
    import torch

LOCK = ".pii.lock"  # held by the process that writes into a run (or sweep) directory


def os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err`, if any: torch's writer reports a failed write as a RuntimeError
    whose context is the OSError of the file object it wrote to."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Write `path` through `write(file)` (e.g. `lambda f: torch.save(state, f)`) whole or not at all."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # a full disk may show only here (network file systems)
        os.replace(tmp, path)
    except BaseException as err:
        with suppress(OSError):
            tmp.unlink()
        cause = os_error(err)
        if isinstance(err, Exception) and cause is not None:
            raise WriteError(path, cause) from None
        raise
    return path


def writable_file(path: str | os.PathLike, option: str) -> Path:
    """A file a script writes once its work is done (--json, --grid), checked before the work: not a
    directory, in a folder (made now) where a file can be made, so that minutes of measuring are never
    lost to a name the system refuses at the end. ConfigError naming `option` otherwise."""
    import tempfile

    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{option} {str(path)!r} is a directory; pass the name of a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent):  # leaves no file behind
            pass
    except OSError as err:
        raise ConfigError(f"{option} {str(path)!r} cannot be written ({err.strerror}: {err.filename}); "
                          f"choose another with {option} ...") from None
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return write_atomic(path, lambda f: f.write(text.encode()))


def strict(value):
    """`value` with each float that is not finite as None: JSON has no NaN or Infinity (Python's
    json module would write them as bare literals that strict readers refuse)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


def json_text(data) -> str:
    """Indented strict JSON (a non-finite float is null)."""
    return json.dumps(strict(data), indent=2, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, data) -> Path:
    return write_text(path, json_text(data))


def read_png(path: str | os.PathLike) -> torch.Tensor:
    """A saved image (pii.run.outputs.save_png) as a float tensor [3, H, W] of pixels in [0, 1], 8-bit
    as saved; a one-line ConfigError if it cannot be read."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    try:
        with Image.open(path) as img:
            return pil_to_tensor(img.convert("RGB")).float() / 255
    except (OSError, ValueError, SyntaxError) as err:  # missing, truncated or not an image (PIL's own types)
        raise ConfigError(f"cannot read image {str(path)!r} ({type(err).__name__}: {str(err)[:80]})") from None


def read_yaml(path: str | os.PathLike, key: str = ""):
    """A YAML file a run left (.hydra/config.yaml, overrides.yaml) as OmegaConf; a one-line ConfigError
    naming `key` (e.g. resume) and the file if it cannot be read or parsed."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return OmegaConf.load(path)
    except (OSError, ValueError, yaml.YAMLError, OmegaConfBaseException) as err:
        reason = " ".join(str(err).split())[:120]
        raise ConfigError(f"{f'{key}=' if key else ''}{str(path)!r} cannot be read as YAML ({type(err).__name__}: "
                          f"{reason})") from None


@contextmanager
def locked(directory: str | os.PathLike) -> Iterator[None]:
    """Hold `directory`'s lock file while inside: a second process that asks for it is refused at once
    (ConfigError). flock is released by the kernel when a process dies, so a killed run never leaves
    its directory locked; the file is removed on leaving."""
    path = Path(directory) / LOCK
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise WriteError(path, err) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise ConfigError(f"another run{f' (pid {holder})' if holder.isdigit() else ''} is writing into "
                              f"{str(directory)!r}; wait for it to end, or choose another directory") from None
        with suppress(OSError):
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                break
        os.close(fd)  # the holder removed the file between our open and flock: take the lock anew
    try:
        with suppress(OSError):  # the pid is for the message above; a full disk must not stop the run
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        with suppress(OSError):
            path.unlink()
        os.close(fd)
