"""Files and directories the admin client writes: their ``OSError`` as a Schooner error.

The local manager keeps a data directory (process records, logs, model bundles and
their packages), every manager copies logs where ``get_logs`` is told to, and builds
and deployers write temporary bundles and build contexts. A full disk, a read-only
directory or a path that is a file surfaces there as an ``OSError``; ``os_errors``
turns it into the error of the step that failed, with what to do about it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager

from admin.exceptions import ContainerManagerError, SchoonerError


def _hint(exc: OSError) -> str:
    """What a user can do about an ``OSError``, as the end of a sentence."""
    if isinstance(exc, PermissionError):
        return "check its permissions, or choose a directory you can write"
    if exc.errno == errno.ENOSPC:
        return "free some disk space and try again"
    if isinstance(exc, NotADirectoryError | FileExistsError):
        return "a file stands where a directory is needed: move it, or choose another path"
    return "check that the path exists and can be written"


def describe(exc: OSError) -> str:
    """``exc`` as a user reads it: what the system said, about which path."""
    path = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{path}"


@contextmanager
def os_errors(what: str, error: type[SchoonerError] = ContainerManagerError) -> Iterator[None]:
    """Raise an ``OSError`` of the block as ``error``: "cannot {what}: {why}; {hint}"."""
    try:
        yield
    except OSError as exc:
        raise error(f"cannot {what}: {describe(exc)}; {_hint(exc)}") from exc
