"""The sweeps of scripts/frontier.py (the script runs them: it may import the entry point). Each budget is one
invert.py sweep (`-m experiment=<methods> <budget>`) in its own folder, <out>/sweeps/<budget name>/, so that
the sweep machinery does the rest (pii.run.sweep): any Hydra launcher, a failed job failing alone, and the
same command again continuing each stopped sweep (resume=<sweep dir>: finished jobs skipped). The report
is pii.eval.frontier's.

A budget is a name and overrides of invert.py, whatever keys they set (steps per stage, stages, copies
per image, classes per job): the defaults are conf/frontier/config.yaml's.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pii import CONF_DIR
from pii.errors import ConfigError, few
from pii.run.compose import quoted

SETTINGS = Path(CONF_DIR) / "frontier" / "config.yaml"
SWEEPS = "sweeps"  # <out>/sweeps/<budget>/: one sweep per budget


@dataclass
class Budget:
    name: str  # the sweep folder's name
    overrides: list[str]  # of invert.py, added to each method's preset


def settings(path: Path = SETTINGS) -> DictConfig:
    """conf/frontier/config.yaml (or another file of its shape: --budgets)."""
    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise ConfigError(f"--budgets {str(path)!r} does not exist; give a YAML file with a `budgets:` table") from None
    except (OSError, ValueError, OmegaConfBaseException) as err:
        raise ConfigError(f"--budgets {str(path)!r} cannot be read ({type(err).__name__}); give a YAML file with a "
                          f"`budgets:` table") from None
    if not isinstance(cfg, DictConfig):
        raise ConfigError(f"--budgets {str(path)!r} is not a table; give a YAML file with a `budgets:` table")
    return cfg


def budget(name: str, overrides, where: str) -> Budget:
    """One budget, checked: a name that can be a folder's, overrides as a list (or one string, split as a
    shell splits it)."""
    if not isinstance(name, str) or not re.fullmatch(r"[\w.+-]+", name):
        raise ConfigError(f"{where}: the budget name {name!r} must be letters, digits and . + - _ (it names a folder)")
    if isinstance(overrides, str):
        overrides = shlex.split(overrides)
    if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
        raise ConfigError(f"{where}: budget {name!r} must be a list of invert.py overrides (key=value), "
                          f"not {overrides!r}")
    return Budget(name, list(overrides))


def budgets(table, where: str) -> list[Budget]:
    """The budgets of a `budgets:` table (name: overrides); none is bad input."""
    if isinstance(table, DictConfig):
        table = OmegaConf.to_container(table)
    if not isinstance(table, Mapping) or not table:
        raise ConfigError(f"{where}: no budgets; give at least one, name: [overrides of invert.py], "
                          f"e.g. steps50: [schedule.steps=50]")
    return [budget(name, overrides, where) for name, overrides in table.items()]


def parse_budget(text: str) -> Budget:
    """--budget 'name: override override ...'."""
    name, sep, rest = text.partition(":")
    if not sep:
        raise ConfigError(f"--budget {text!r}: give a name, a colon and invert.py overrides, "
                          f"e.g. --budget 'steps50: schedule.steps=50'")
    return budget(name.strip(), rest, f"--budget {text!r}")


def check_methods(methods: list[str]) -> list[str]:
    """Each method is a preset of conf/experiment/ (a top-level one: a method of the leaderboard)."""
    known = sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml"))
    if not methods:
        raise ConfigError(f"--methods: no method given; name presets of conf/experiment/: {few(known)}")
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ConfigError(f"--methods: unknown method {unknown[0]!r}; the presets of conf/experiment/ are "
                          f"{few(known, 20)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods {','.join(methods)}: a method named twice")
    return methods


def parse_seeds(value) -> list[int]:
    """--seed (or the config's seed): one whole number or several, comma-separated (a list in the config)."""
    items = list(value) if isinstance(value, (list, tuple)) or OmegaConf.is_list(value) else str(value).split(",")
    try:
        seeds = [int(str(item).strip()) for item in items]
    except ValueError:
        raise ConfigError(f"--seed {value!r}: give whole numbers, comma-separated (e.g. --seed 0,1)") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seed {value!r}: give each seed once (e.g. --seed 0,1)")
    return seeds


def sweep_arguments(budget: Budget, methods: list[str], classes: str | None, seeds: list[int], overrides: list[str],
                    sweep_dir: Path) -> list[str]:
    """invert.py's command line for one budget's sweep; with resume= once the sweep has begun (its record)."""
    from pii.run.sweep import MULTIRUN

    # the budget's overrides last: they win over the same key among the overrides for every sweep
    argv = ["-m", f"experiment={','.join(methods)}", *([f"classes={classes}"] if classes else []), f"seed={','.join(map(str, seeds))}",
            *overrides, *budget.overrides, f"hydra.sweep.dir={quoted(str(sweep_dir))}"]
    if (sweep_dir / MULTIRUN).is_file():
        argv.append(f"resume={quoted(str(sweep_dir))}")
    return argv


def planned(args, conf: DictConfig, sweeps: Path) -> list[tuple[Budget, list[str]]]:
    """Each budget's sweep in `sweeps`/<budget>/ with its invert.py command line, as scripts/frontier.py's
    command line (`args`: --methods, --budgets, --budget, --classes, --seed and the overrides) and its
    settings (`conf`, conf/frontier/config.yaml's where an option is not given) say; checked, nothing run."""
    methods = check_methods(args.methods.split(",") if args.methods is not None else list(conf.methods))
    where = f"--budgets {args.budgets}" if args.budgets else str(SETTINGS.name)
    chosen = [parse_budget(b) for b in args.budget] if args.budget else budgets(conf.get("budgets"), where)
    if len({b.name for b in chosen}) != len(chosen):
        raise ConfigError(f"--budget: a budget name given twice ({', '.join(b.name for b in chosen)})")
    classes = args.classes if args.classes is not None else conf.get("classes")
    classes = None if classes in (None, "none") else str(classes)
    seeds = parse_seeds(args.seed if args.seed is not None else conf.seed)
    return [(b, sweep_arguments(b, methods, classes, seeds, args.overrides, sweeps / b.name)) for b in chosen]
