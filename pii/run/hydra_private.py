"""The one module that reaches into Hydra's private API (`hydra._internal`), written against
hydra-core 1.3. Hydra has no public API for what is here; every other module imports it from here,
and tests/test_entry_guards.py fails by name on a Hydra release that moves or changes it.

- `BasicSweeper`: every combination of the swept values. The sweep preflight splits a command line
  into jobs with its `split_arguments`, and invert.py's JobSweeper (hydra_plugins/pii) derives from it.
- `args_parser`: Hydra's own command-line parser, so that the entry points read a flag
  (`-cn config`, `--config-name=config`, `--cfg job`, ...) as `@hydra.main` reads it.
- `Callbacks`: the `hydra.callbacks` of a config, which the entry points call around the run or the
  sweep they start with a config they composed and checked (what `Hydra.run` / `Hydra.multirun` do
  with a config they compose themselves).
- `initialized`: Hydra set up on a config directory, plus --config-dir's where `@hydra.main` puts it
  (the public `initialize_config_dir` takes one directory).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

import hydra

HYDRA_VERSION = "1.3"  # the release this module was written against

try:
    from hydra._internal.callbacks import Callbacks
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra._internal.hydra import Hydra
    from hydra._internal.utils import create_config_search_path, get_args_parser
except ImportError as err:  # pragma: no cover - only on another Hydra release
    raise ImportError(f"hydra-core {hydra.__version__} moved a private name pii uses (pii.run.hydra_private): {err}; "
                      f"install hydra-core {HYDRA_VERSION}") from None

__all__ = ["BasicSweeper", "Callbacks", "HYDRA_VERSION", "args_parser", "initialized", "split_sweep"]


def args_parser() -> argparse.ArgumentParser:
    """Hydra's parser of `python invert.py [flags] [overrides]`."""
    return get_args_parser()


def split_sweep(parsed_overrides) -> list[list[str]]:
    """Each job's overrides, as BasicSweeper splits them when it launches (all jobs in one batch)."""
    return [list(job) for batch in BasicSweeper.split_arguments(parsed_overrides, None) for job in batch]


@contextmanager
def initialized(config_dir: str, job_name: str, extra_dir: str | None = None) -> Iterator[object]:
    """Inside, Hydra set up on `config_dir` (as `hydra.initialize_config_dir`) with `extra_dir` (a
    --config-dir) after it, before the schemas, as `@hydra.main` searches it; yields the config loader."""
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup
    from hydra.version import setbase

    backup = get_gh_backup()
    setbase(HYDRA_VERSION)
    search_path = create_config_search_path(search_path_dir=config_dir)
    if extra_dir is not None:
        search_path.prepend(provider="command-line", path=f"file://{extra_dir}", anchor=SearchPathQuery(provider="schema"))
    try:
        Hydra.create_main_hydra2(task_name=job_name, config_search_path=search_path)
        yield GlobalHydra.instance().config_loader()
    finally:
        restore_gh_from_backup(backup)
