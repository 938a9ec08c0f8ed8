"""The admin token in front of every route but ``/healthz``.

An ASGI middleware, so that nothing the app serves -- the ``/admin/*`` routes,
``/docs``, ``/openapi.json``, a 404 for an unknown path -- answers before the token is
checked. A request without ``Authorization: Bearer <admin token>``, or with another
token, gets 401 ``unauthorized`` in the API's error shape with ``WWW-Authenticate:
Bearer``; the comparison is of sha256 digests in constant time, against the secrets
directory's ``admin-token.sha256`` re-read when it changes (``model_container.bearer``).
The token is never logged: the message says what was wrong, not what was sent.

The web dashboard (``management_frontend/ui``) is let in another way: a valid session
cookie, got by logging in with the token, stands for the token on ``/ui`` and on the
``/admin`` calls its pages make. A cookie-authenticated request that changes something
(any method but GET/HEAD/OPTIONS) must also carry ``X-Schooner-UI: 1`` and no foreign
``Origin`` -- which a page of another site cannot send -- else 403: the cookie is
already ``SameSite=Strict``, this is defence in depth against cross-site requests. A
dashboard page asked for without a session shows the login form; the login form, logging
out and the login page's assets are open.
"""

from __future__ import annotations

import logging
from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

from management_frontend.api.errors import error_response
from management_frontend.ui import paths as ui_paths
from management_frontend.ui.pages import login_response, same_origin
from management_frontend.ui.session import Sessions
from model_container.bearer import WWW_AUTHENTICATE, AdminTokenCheck, header

logger = logging.getLogger(__name__)

# What a load balancer or an orchestrator probes without credentials.
OPEN_PATHS: Final = frozenset({"/healthz"})
# Methods that change nothing: a cookie alone may make them.
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
UI_HEADER: Final = b"x-schooner-ui"
CSRF_MESSAGE: Final = (
    "a change authenticated by the dashboard's session cookie must come from the "
    "dashboard's own pages (header 'X-Schooner-UI: 1', no other site's Origin); API "
    "clients send the admin token as 'Authorization: Bearer <token>' instead"
)


def _from_dashboard(scope: Scope) -> bool:
    """The CSRF check of a cookie-authenticated change: our header, our origin."""
    marked = any(n == UI_HEADER and v == b"1" for n, v in scope.get("headers", []))
    return marked and same_origin(scope)


class AdminAuthMiddleware:
    """Refuse every HTTP request but ``OPEN_PATHS`` without the admin token (401) or,
    when ``sessions`` is given, a dashboard session."""

    def __init__(
        self, app: ASGIApp, check: AdminTokenCheck, sessions: Sessions | None = None
    ) -> None:
        self.app = app
        self.check = check
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        if scope["type"] != "http" or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.sessions is not None and ui_paths.is_open(path):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers", [])
        authorization = header(headers)
        if self.check.allows(authorization):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "")
        if self.sessions is not None and self.sessions.from_headers(headers):
            if method in SAFE_METHODS or _from_dashboard(scope):
                await self.app(scope, receive, send)
                return
            logger.warning(
                "403 for %s %s: a cookie-authenticated change without the "
                "dashboard's header or from another origin",
                method,
                path,
            )
            await error_response(403, "forbidden", CSRF_MESSAGE)(scope, receive, send)
            return
        if self.sessions is not None and method in SAFE_METHODS and ui_paths.is_page(path):
            await login_response(scope, path)(scope, receive, send)
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
