"""The admin token in front of every route but ``/healthz``.

An ASGI middleware, so that nothing the app serves -- the ``/admin/*`` routes,
``/docs``, ``/openapi.json``, a 404 for an unknown path -- answers before the token is
checked. A request without ``Authorization: Bearer <admin token>``, or with another
token, gets 401 ``unauthorized`` in the API's error shape with ``WWW-Authenticate:
Bearer``; the comparison is of sha256 digests in constant time, against the secrets
directory's ``admin-token.sha256`` re-read when it changes (``model_container.bearer``).
The token is never logged: the message says what was wrong, not what was sent.
"""

from __future__ import annotations

import logging
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from management_frontend.api.errors import error_response
from model_container.bearer import WWW_AUTHENTICATE, AdminTokenCheck, header

logger = logging.getLogger(__name__)

# What a load balancer or an orchestrator probes without credentials.
OPEN_PATHS: Final = frozenset({"/healthz"})


class AdminAuthMiddleware:
    """Refuse every HTTP request but ``OPEN_PATHS`` without the admin token (401)."""

    def __init__(self, app: ASGIApp, check: AdminTokenCheck) -> None:
        self.app = app
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        authorization = header(scope.get("headers", []))
        if self.check.allows(authorization):
            await self.app(scope, receive, send)
            return
        logger.info(
            "401 for %s %s from %s: %s",
            scope.get("method", ""),
            scope["path"],
            (scope.get("client") or ("?",))[0],
            "no bearer token" if authorization is None else "not the admin token",
        )
        response = error_response(
            401,
            "unauthorized",
            self.check.failure(authorization),
            headers={"WWW-Authenticate": WWW_AUTHENTICATE},
        )
        await response(scope, receive, send)
