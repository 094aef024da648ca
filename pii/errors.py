"""The exception types for what the user can fix, and how a message shows a long list.

A ConfigError is raised where the input is read; the entry points turn it into one line on stderr
and exit code 2 (pii.run.cli.ending). Nothing deeper catches and re-words exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """A user-facing error: the message says what is wrong and how to fix it."""


class WriteError(ConfigError):
    """A file could not be written (a full disk, a file-size limit, a name or a permission the file
    system refuses). pii.files writes every file whole or not at all, so the file it was to replace
    is still the earlier one."""

    def __init__(self, path, err: OSError):
        self.path, self.reason = str(path), err.strerror or type(err).__name__
        super().__init__(f"cannot write {self.path!r} ({self.reason})")


def few(items: Iterable, shown: int = 3, sep: str = ", ") -> str:
    """A list for a one-line message: its first `shown` items and how many more ('a, b, c and 997 more')."""
    items = [str(item) for item in items]
    head = sep.join(items[:shown])
    return f"{head} and {len(items) - shown} more" if len(items) > shown else head
