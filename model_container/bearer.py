"""Checking ``Authorization: Bearer <admin token>`` against ``admin-token.sha256``.

Every process that answers an admin-only request (the management API, the query
frontend's ``/status`` and ``/metrics``, a replica's ``/metrics``) holds an
``AdminTokenCheck`` on its secrets directory. It compares the sha256 of the presented
token with the file's in constant time (``credentials.token_matches``), and re-reads the
file when it changes -- looked at (one ``stat``) at most once a second -- so that a
rotated token takes effect without a restart and the old one stops working.

The token is never logged and never put in an error: the replies built from
``failure()`` say what was wrong (missing, not this cluster's) and where the token comes
from, nothing else. Pure standard library: this module goes into every model image.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from model_container import credentials as cred

logger = logging.getLogger(__name__)

# How often the token file is looked at for a change (a rotation).
RECHECK_S: Final = 1.0

# The header a 401 carries (RFC 6750).
WWW_AUTHENTICATE: Final = 'Bearer realm="schooner"'

HOW_TO_FIX: Final = (
    "send the cluster's admin token as 'Authorization: Bearer <token>'; the admin client "
    "and the schooner CLI read it from the cluster (<data_dir>/admin-token on a local "
    "cluster) or from $SCHOONER_ADMIN_TOKEN"
)


def bearer_token(authorization: str | bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else ``None``."""
    if authorization is None:
        return None
    if isinstance(authorization, bytes):
        try:
            authorization = authorization.decode("latin-1")
        except UnicodeDecodeError:  # pragma: no cover (latin-1 decodes every byte)
            return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def header(headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]) -> bytes | None:
    """The ``authorization`` header of an ASGI scope's headers, if any."""
    for name, value in headers:
        if name == b"authorization":
            return value
    return None


class AdminTokenCheck:
    """Whether a bearer token is the cluster's admin token, by its sha256 on disk.

    ``secrets_dir`` ``None`` (a process started without ``--secrets-dir``): no token is
    accepted, and ``failure()`` says why. Safe to call from several threads.
    """

    def __init__(
        self,
        secrets_dir: str | os.PathLike[str] | None,
        *,
        recheck_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = None if secrets_dir is None else Path(secrets_dir) / cred.ADMIN_TOKEN_SHA256
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._stat: tuple[int, int, int] | None = None
        self._sha256: str | None = None

    def __repr__(self) -> str:
        return f"AdminTokenCheck(path={str(self.path)!r})"

    def load(self) -> None:
        """Read the hash now; ``credentials.CredentialError`` if it cannot be read."""
        if self.path is None:
            raise cred.CredentialError(
                "no secrets directory: pass --secrets-dir (or $SCHOONER_SECRETS_DIR) the "
                "directory the container manager wrote the cluster's credentials to"
            )
        value = cred.read(self.path.parent, self.path.name)
        st = self.path.stat()
        with self._lock:
            self._sha256 = value.lower()
            self._stat = (st.st_ino, st.st_mtime_ns, st.st_size)
            self._checked_at = self._clock()

    def _current(self) -> str | None:
        """The hash to compare with, re-read if the file changed (looked at once a second)."""
        if self.path is None:
            return None
        now = self._clock()
        if now - self._checked_at < self._recheck_s:
            return self._sha256
        with self._lock:
            if now - self._checked_at < self._recheck_s:
                return self._sha256
            self._checked_at = now
            try:
                st = self.path.stat()
                stat = (st.st_ino, st.st_mtime_ns, st.st_size)
                if stat != self._stat:
                    value = cred.read(self.path.parent, self.path.name)
                    self._sha256, self._stat = value.lower(), stat
                    logger.info("admin token hash (re)read from %s", self.path)
            except (OSError, cred.CredentialError) as exc:
                # Keep the last good hash: a file being replaced must not lock admins out.
                logger.warning("cannot re-read %s: %s", self.path, exc)
        return self._sha256

    def digest(self) -> str | None:
        """The admin token's sha256 (hex) now, re-read if the file changed; ``None`` when
        there is none. What a dashboard session is signed with, so that a rotation ends
        every session (``management_frontend/ui/session.py``)."""
        return self._current()

    def allows(self, authorization: str | bytes | None) -> bool:
        """Whether the ``Authorization`` header value carries the admin token."""
        expected = self._current()
        token = bearer_token(authorization)
        if expected is None or token is None:
            return False
        return cred.token_matches(token, expected)

    def failure(self, authorization: str | bytes | None) -> str:
        """The sentence a 401 carries for this header value (never the token)."""
        if self.path is None:
            return (
                "this endpoint needs the cluster's admin token, but this process was started "
                "without --secrets-dir and cannot check one: start it with the secrets "
                "directory the container manager wrote"
            )
        if bearer_token(authorization) is None:
            if authorization:
                return f"the Authorization header is not 'Bearer <token>': {HOW_TO_FIX}"
            return f"this endpoint needs the cluster's admin token: {HOW_TO_FIX}"
        return (
            "the bearer token is not this cluster's admin token (was it rotated, or is it "
            f"another cluster's?): {HOW_TO_FIX}"
        )
