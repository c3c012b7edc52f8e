"""The one exception type users see: the CLI prints its message as one line and exits 2."""

from __future__ import annotations


class DaalmlError(ValueError):
    """A problem with the user's input (file, path, config key, checkpoint), named in the message."""
