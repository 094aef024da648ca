"""pii: Plug-In Inversion and feedforward inversion of vision classifiers.

Layers, each importing only those before it: pii.core (the algorithm), pii.models (classifiers,
weights, device policy), pii.eval (results, judge, leaderboard, speed), pii.run (configs, entry
points, runner, tracking), pii.feedforward (the logit-conditioned generator). docs/architecture.md
draws them. Every layer may use the base: this package's CONF_DIR, pii.errors (ConfigError) and
pii.files (files written whole or not at all, strict JSON, a run directory's lock).
"""

from pathlib import Path

from pii.errors import ConfigError

__all__ = ["CONF_DIR", "ConfigError"]


def conf_dir() -> str:
    """Hydra's config root: pii/conf inside an installed wheel (pyproject ships conf/ there), else the
    checkout's top-level conf/ (running from the repo, or an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "conf"
    return str(installed if (installed / "config.yaml").is_file() else package.parent / "conf")


CONF_DIR = conf_dir()
