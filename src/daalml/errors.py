"""The one exception type users see: the CLI prints its message as one line and exits 2."""

from __future__ import annotations

from collections.abc import Container


class DaalmlError(ValueError):
    """A problem with the user's input (file, path, config key, checkpoint), named in the message."""


def check_registration(
    kind: str,
    name: str,
    registered: Container[str],
    *,
    replace: bool,
    valid: bool = True,
    rule: str = "empty or padded",
) -> None:
    """A name a registry (of ``kind``: dataset, backbone, head, loss) may take, or a DaalmlError.

    ``valid`` is the registry's own rule on top of "not empty, not padded", said by ``rule``.
    """
    if not valid or not name or name != name.strip():
        raise DaalmlError(f"{kind} name {name!r} is invalid ({rule})")
    if name in registered and not replace:
        raise DaalmlError(f"{kind} {name!r} is already registered (pass replace=True)")
