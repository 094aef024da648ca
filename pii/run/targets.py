"""Config groups that name what builds them by `_target_` (hydra.utils.instantiate): the logger
(the tracker), train_invert's data and classifier. A new option is a class or function plus a YAML
file that names it; nothing here lists the options."""

from __future__ import annotations

import functools
import inspect

from omegaconf import DictConfig, OmegaConf

from pii.errors import ConfigError


def bound(cfg: DictConfig, group: str, choices: str, call_with: tuple[str, ...] = (),
          leave_out: tuple[str, ...] = ()) -> functools.partial:
    """`cfg._target_` with the group's other keys bound as keyword arguments, nothing built yet
    (`instantiate(..., _partial_=True)`). It is checked against the keyword arguments `call_with`
    that the caller adds, so a missing `_target_`, one that cannot be imported, or a key its target
    has no argument for is one ConfigError naming `group` and ending with `choices` (e.g. "use
    logger=none or logger=wandb"). `leave_out`: keys that only label the option (data's `name`); a key
    with no value (`???`) is no argument."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    if not cfg.get("_target_"):
        raise ConfigError(f"{group} has no _target_ (the class or function that builds it); {choices}")
    try:
        keys = [key for key in cfg if key not in leave_out and not OmegaConf.is_missing(cfg, key)]
        make = instantiate(OmegaConf.masked_copy(cfg, keys), _partial_=True)
        inspect.signature(make.func).bind(*make.args, **make.keywords, **dict.fromkeys(call_with))
    except InstantiationException as err:
        raise ConfigError(f"{group}._target_={cfg._target_!r} cannot be loaded "
                          f"({type(err.__cause__ or err).__name__}); {choices}") from None
    except TypeError as err:  # a key the target has no argument for, or one the caller passes too
        raise ConfigError(f"{group} ({cfg._target_}): {err}") from None
    return make
