"""The one exception type for bad user input.

It is raised where the input is read; the entry points turn it into one line
on stderr and exit code 2. Nothing deeper catches and re-words exceptions.
"""


class ConfigError(ValueError):
    """A user-facing error: the message says what is wrong and how to fix it."""
