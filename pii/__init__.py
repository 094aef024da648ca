"""pii: Plug-In Inversion and feedforward inversion of vision classifiers."""

from pii.errors import ConfigError

__all__ = ["ConfigError"]
