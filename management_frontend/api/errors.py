"""Turning every failure into ``{"error": code, "message": sentence}`` with the right status.

Our own errors carry their code and status; the state contract's ``InvalidValue`` is a
400 ``invalid``; FastAPI's validation errors become one
readable 400 sentence naming each bad field; a Redis that cannot be reached is a 503
with ``Retry-After``; an unknown path or method keeps its 404/405. A request body over
the size limit is refused with 413 before it is read in full, and a JSON body nested
deeper than ``rules.MAX_JSON_DEPTH`` with 400 before it is parsed (``BodyLimitMiddleware``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from management_frontend.errors import ManagementError
from management_frontend.state.errors import InvalidValue
from management_frontend.state.nesting import depth_over, too_deep
from management_frontend.state.rules import MAX_JSON_DEPTH, show

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024

_STATUS_CODES = {
    400: "invalid",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
}


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


def _field(loc: Sequence[Any]) -> str:
    """``("body", "runtime", "python")`` → ``runtime.python``; ``[2]`` for list items."""
    out = ""
    for part in loc[1:]:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe(error: dict[str, Any]) -> str:
    """One pydantic/FastAPI validation error as a sentence naming the field."""
    kind = str(error.get("type", ""))
    loc: Sequence[Any] = error.get("loc", ())
    ctx: dict[str, Any] = error.get("ctx") or {}
    field = _field(loc)
    where = loc[0] if loc else "body"
    if kind == "value_error" and "error" in ctx:
        return str(ctx["error"])
    if kind == "json_invalid":
        reason = ctx.get("error", "parse error")
        return f"the request body is not valid JSON ({reason}): send a JSON object"
    if kind == "missing":
        if not field:
            return "the request body is missing: send a JSON object"
        return f"field '{field}' is required" if where == "body" else f"'{field}' is required"
    if kind == "extra_forbidden":
        return f"field '{field}' is not accepted here: check its spelling against the API docs"
    if not field and kind in ("model_attributes_type", "model_type", "dict_type"):
        body = error.get("input")
        if isinstance(body, bytes | str):
            return (
                "the request body was not read as JSON: send it with Content-Type: application/json"
            )
        return f"the request body must be a JSON object, got {show(body)}"
    return f"field '{field}': {error.get('msg', 'is invalid')} (got {show(error.get('input'))})"


def _allowed_methods(request: Request) -> str:
    """Every method some route answers on the request's path, for ``Allow``."""
    methods: set[str] = set()
    routes: list[Any] = list(request.app.router.routes)
    while routes:
        route = routes.pop()
        # An included router (FastAPI keeps it whole, as ``original_router``) holds routes.
        inner = getattr(getattr(route, "original_router", route), "routes", None)
        if inner is not None and route is not request.app.router:
            routes.extend(inner)
            continue
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


def install_error_handlers(app: FastAPI, redis_url: str) -> None:
    """Register the handlers; ``redis_url`` (without password) goes into 503 messages."""

    async def on_ours(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ManagementError)
        return error_response(exc.status, exc.code, exc.message)

    async def on_invalid_value(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, InvalidValue)
        return error_response(400, "invalid", exc.message)

    async def on_validation(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        sentences = list(dict.fromkeys(describe(dict(e)) for e in exc.errors()))
        return error_response(400, "invalid", "; ".join(sentences) or "invalid request")

    async def on_redis_down(_request: Request, exc: Exception) -> JSONResponse:
        logger.warning("Redis at %s unavailable: %s", redis_url, exc)
        return error_response(
            503,
            "unavailable",
            f"Redis at {redis_url} cannot be reached ({exc}): check that it runs, then retry",
            headers={"Retry-After": "1"},
        )

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            # Starlette's Allow names the methods of one route; a path has several.
            allowed = _allowed_methods(request)
            headers = {"Allow": allowed}
            message = f"{request.method} is not allowed on {request.url.path}: use {allowed}"
        elif exc.status_code == 400 and exc.__cause__ is not None:
            # FastAPI's own "error parsing the body": a parser error that is no
            # JSONDecodeError, such as an integer of over 4300 digits.
            message = (
                "the request body could not be parsed as JSON "
                f"({type(exc.__cause__).__name__}): send a JSON object, with integers of "
                "at most 4300 digits"
            )
        else:
            message = str(exc.detail)
        if exc.status_code != 405:
            headers = dict(exc.headers or {})
        return error_response(exc.status_code, code, message, headers=headers)

    app.add_exception_handler(ManagementError, on_ours)
    app.add_exception_handler(InvalidValue, on_invalid_value)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(RedisConnectionError, on_redis_down)
    app.add_exception_handler(RedisTimeoutError, on_redis_down)
    app.add_exception_handler(StarletteHTTPException, on_http)


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with 413, and JSON bodies nested deeper
    than ``max_depth`` with 400, before the app parses them.

    A declared Content-Length over the limit is refused before anything is read; else
    the body is read (counting streamed chunks, at most ``max_bytes``), checked, and
    handed to the app as one message.
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, max_depth: int = MAX_JSON_DEPTH
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_depth = max_depth

    def _too_large(self) -> JSONResponse:
        message = f"the request body is over {self.max_bytes} bytes: send a smaller one"
        return error_response(413, "too_large", message)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._too_large()(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if b"json" in headers.get(b"content-type", b"").lower() and depth_over(
            body, self.max_depth
        ):
            response = error_response(400, "invalid", too_deep(self.max_depth))
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)
