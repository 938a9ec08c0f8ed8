"""The dashboard's routes: the login form, logging out, the pages and their assets.

    GET  /ui/login            the login form (also shown for any page asked for without
                              a session, leading back to that page)
    POST /ui/login            form body ``token`` (+ ``next``): the admin token, checked
                              like a bearer token; success sets the session cookie
                              (``session.py``) and redirects (303) to the page
    POST /ui/logout           deletes the cookie, back to the login form
    GET  /ui, /ui/apps/{app}, /ui/models/{model}
                              one page shell; its script (``static/ui/``) reads the path
                              and draws the page from the admin API
    GET  /ui/assets/<file>    the dashboard's HTML, CSS, JS and icon, from the package

The token travels only in a POST body, never in a URL, and is never logged nor written
back into a page. Every ``/ui`` response carries a Content-Security-Policy that lets a
page load scripts, styles, images and data from this origin only and be framed by no
one (``SecurityHeadersMiddleware``); the pages put data in the DOM with ``textContent``.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Final
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from management_frontend.ui import paths
from management_frontend.ui.session import (
    COOKIE_NAME,
    SECURE_COOKIE_NAME,
    Sessions,
    cookie_name,
)
from management_frontend.ui.throttle import LoginThrottle
from model_container.bearer import AdminTokenCheck

logger = logging.getLogger(__name__)

ASSETS_DIR: Final = Path(__file__).resolve().parent.parent / "static" / "ui"
# A login form's body: the token and where to go; anything bigger is not ours.
MAX_LOGIN_BODY: Final = 8192

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    # Not no-referrer: under it a browser sends "Origin: null" with a form's POST, and
    # the login's and the API's same-origin checks could not tell our pages from others.
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
}

WRONG_TOKEN: Final = (
    "That is not this cluster's admin token. It is in <data_dir>/admin-token on a local "
    "cluster (or wherever your cluster's secrets are); was it rotated?"
)


class SecurityHeadersMiddleware:
    """Add ``SECURITY_HEADERS`` (and ``no-store`` for pages) to every ``/ui`` response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not (path == paths.PREFIX or path.startswith("/ui/")):
            await self.app(scope, receive, send)
            return
        page = not path.startswith(paths.ASSETS_PATH + "/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
                if page:
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _root(scope: Scope) -> str:
    return str(scope.get("root_path", "")).rstrip("/")


def _read_template(name: str) -> str:
    return (ASSETS_DIR / name).read_text(encoding="utf-8")


def login_response(scope: Scope, next_path: str, message: str = "", status: int = 200) -> Response:
    """The login form, leading to ``next_path``, with ``message`` (escaped) if any."""
    page = (
        _read_template("login.html")
        .replace("__ROOT__", html.escape(_root(scope)))
        .replace("__NEXT__", html.escape(paths.safe_next(next_path)))
        .replace("__MESSAGE__", html.escape(message))
        .replace("__MESSAGE_CLASS__", "message error" if message else "message hidden")
    )
    return HTMLResponse(page, status_code=status)


def is_secure(scope: Scope) -> bool:
    """Whether the browser reached us over TLS (then the cookie is ``Secure``)."""
    return scope.get("scheme") == "https"


def same_origin(scope: Scope) -> bool:
    """False when the request names an ``Origin`` other than the host it was sent to
    (a browser sends it with every POST/PUT/DELETE); True without one."""
    origin = host = None
    for name, value in scope.get("headers", []):
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    if origin is None:
        return True
    if origin == "null" or host is None:
        return False
    return bool(urlsplit(origin).netloc.lower() == host.lower())


def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def install_dashboard(app: FastAPI, check: AdminTokenCheck, sessions: Sessions) -> None:
    """Add the dashboard's routes and assets to ``app`` (behind ``AdminAuthMiddleware``)."""
    throttle = LoginThrottle()
    app.mount(
        paths.ASSETS_PATH,
        StaticFiles(directory=ASSETS_DIR, check_dir=False),
        name="ui-assets",
    )

    async def login_form(request: Request) -> Response:
        if sessions.from_headers(request.scope.get("headers", [])):
            return RedirectResponse(_root(request.scope) + paths.PREFIX, status_code=303)
        return login_response(request.scope, paths.PREFIX)

    async def login(request: Request) -> Response:
        scope = request.scope
        client = _client(request)
        if not same_origin(scope):
            logger.warning("dashboard login from %s refused: a cross-origin form", client)
            return login_response(
                scope, paths.PREFIX, "This form was sent from another site.", status=403
            )
        wait = throttle.retry_after(client)
        if wait > 0:
            logger.warning("dashboard login from %s refused: too many failures", client)
            response = login_response(
                scope,
                paths.PREFIX,
                f"Too many failed logins from this address: try again in {int(wait) + 1} s.",
                status=429,
            )
            response.headers["retry-after"] = str(int(wait) + 1)
            return response
        body = await request.body()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/x-www-form-urlencoded" or len(body) > MAX_LOGIN_BODY:
            return login_response(
                scope, paths.PREFIX, "Log in with the form: it posts the token.", status=400
            )
        form = parse_qs(body.decode("latin-1"), max_num_fields=4)
        token = (form.get("token") or [""])[0].strip()
        next_path = paths.safe_next((form.get("next") or [""])[0])
        if not token:
            return login_response(scope, next_path, "Enter the cluster's admin token.", status=400)
        if not check.allows(f"Bearer {token}"):
            throttle.failed(client)
            logger.warning("dashboard login from %s refused: not the admin token", client)
            return login_response(scope, next_path, WRONG_TOKEN, status=401)
        logger.info("dashboard login from %s", client)
        response = RedirectResponse(_root(scope) + next_path, status_code=303)
        secure = is_secure(scope)
        response.set_cookie(
            cookie_name(secure),
            sessions.issue(),
            max_age=sessions.ttl_s,
            path="/",
            secure=secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse(_root(request.scope) + paths.LOGIN_PATH, status_code=303)
        if not same_origin(request.scope):
            return response
        for name in (COOKIE_NAME, SECURE_COOKIE_NAME):
            if name in request.cookies:
                response.delete_cookie(
                    name,
                    path="/",
                    secure=name == SECURE_COOKIE_NAME,
                    httponly=True,
                    samesite="strict",
                )
        logger.info("dashboard logout from %s", _client(request))
        return response

    async def page(request: Request) -> Response:
        shell = _read_template("page.html").replace("__ROOT__", html.escape(_root(request.scope)))
        return HTMLResponse(shell)

    app.add_api_route(paths.LOGIN_PATH, login_form, methods=["GET"], include_in_schema=False)
    app.add_api_route(paths.LOGIN_PATH, login, methods=["POST"], include_in_schema=False)
    app.add_api_route(paths.LOGOUT_PATH, logout, methods=["POST"], include_in_schema=False)
    for route in ("/ui", "/ui/", "/ui/apps/{app}", "/ui/models/{model}"):
        app.add_api_route(route, page, methods=["GET"], include_in_schema=False)
