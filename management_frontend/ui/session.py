"""The dashboard's session cookie: what a browser holds instead of the admin token.

After a login with the admin token (``login.py``) the browser gets a cookie whose value
is ``<expiry>.<nonce>.<mac>``: the unix second it stops being valid, 16 random bytes,
and HMAC-SHA256 over both, keyed with the admin token's sha256 (the hash the server
already checks bearer tokens against, ``model_container.bearer.AdminTokenCheck``) together
with a secret of the frontends' (the cluster's Redis password; without one, random per
process). The hash alone is no key: every replica holds ``admin-token.sha256`` to check
its ``/metrics``, and a replica runs user code. So:

- the cookie is not the token, and the token cannot be recovered from it;
- nothing is stored server-side: any management frontend of the cluster accepts it (one
  whose Redis has no password of the cluster's accepts only its own, until it restarts);
- rotating the admin token changes the key, and every session ends at once;
- a cookie whose expiry was edited no longer matches its MAC.

The cookie is ``HttpOnly`` (scripts cannot read it), ``SameSite=Strict`` (no other site
can make the browser send it), ``Path=/`` (it authenticates ``/admin/*`` too), and over
TLS ``Secure`` with the ``__Host-`` name prefix. Logging out deletes it from the
browser; a copy made before then lives until its expiry or the next token rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Final

from starlette.requests import cookie_parser

from model_container.bearer import AdminTokenCheck

COOKIE_NAME: Final = "schooner_ui"
# Over TLS: the browser refuses to set it without Secure, Path=/ and no Domain.
SECURE_COOKIE_NAME: Final = "__Host-schooner_ui"
# How long a login lasts.
SESSION_TTL_S: Final = 8 * 3600
# Domain separation: this key is for dashboard sessions and nothing else.
_CONTEXT: Final = b"schooner-ui-session-v1\x00"


def cookie_name(secure: bool) -> str:
    return SECURE_COOKIE_NAME if secure else COOKIE_NAME


class Sessions:
    """Issue and check session values, keyed with the admin token's current sha256."""

    def __init__(
        self,
        check: AdminTokenCheck,
        *,
        ttl_s: int = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
        server_secret: str | None = None,
    ) -> None:
        self.check = check
        self.ttl_s = ttl_s
        self._clock = clock
        self.use_server_secret(server_secret)

    def use_server_secret(self, secret: str | None) -> None:
        """Key sessions with ``secret`` too (what only the frontends hold); ``None``: a
        random one, so sessions end with this process."""
        self._server_secret = (secret or secrets.token_hex(32)).encode("utf-8")

    def _mac(self, key_hex: str, payload: str) -> str:
        key = hashlib.sha256(
            _CONTEXT + key_hex.encode("ascii") + b"\x00" + self._server_secret
        ).digest()
        return hmac.new(key, payload.encode("ascii"), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        """A new session value; only after the admin token was checked."""
        key = self.check.digest()
        if key is None:
            raise RuntimeError("no admin token hash to sign a session with")
        payload = f"{int(self._clock()) + self.ttl_s}.{secrets.token_hex(16)}"
        return f"{payload}.{self._mac(key, payload)}"

    def valid(self, value: str | None) -> bool:
        """Whether ``value`` is an unexpired session signed with the current token."""
        if not value or len(value) > 200:
            return False
        key = self.check.digest()
        if key is None:
            return False
        payload, _, mac = value.rpartition(".")
        expiry, _, nonce = payload.partition(".")
        if not (expiry.isdigit() and nonce and mac):
            return False
        try:
            expected = self._mac(key, payload)
        except UnicodeEncodeError:
            return False
        if not hmac.compare_digest(expected, mac):
            return False
        return int(expiry) > self._clock()

    def from_headers(
        self, headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]
    ) -> bool:
        """Whether the request's ``Cookie`` headers carry a valid session (either name)."""
        for name, raw in headers:
            if name != b"cookie":
                continue
            # Starlette's lenient parser, as browsers split: one odd cookie of another app
            # on this host (which makes http.cookies stop) does not hide ours.
            cookies = cookie_parser(raw.decode("latin-1"))
            for key in (COOKIE_NAME, SECURE_COOKIE_NAME):
                if self.valid(cookies.get(key)):
                    return True
        return False
