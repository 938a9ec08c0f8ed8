"""Who may ask what of the query frontend: per-app API keys, and the admin token.

``POST /{app}/predict`` and ``/{app}/update`` of an app with API keys need
``Authorization: Bearer <key>``: missing or unknown (revoked, never created) is 401, a
key of another app 403. The check is one sha256 of the presented key and a lookup in the
route's set of key hashes (kept current from the change feed, so a revoked key stops
working as soon as the feed delivers the revocation); an app without keys is open, and
costs nothing more than reading ``route.key_hashes``. Hashes, not keys, are compared:
the set holds sha256 digests of 256-bit secrets, so a lookup's timing tells nothing
about a key.

``/status`` and ``/metrics`` are the operator's: they need the cluster's admin token
(``model_container.bearer``). Neither a key nor a token is ever logged or echoed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from model_container.bearer import WWW_AUTHENTICATE, AdminTokenCheck, bearer_token, header
from model_container.credentials import sha256_hex
from query_frontend.http.asgi import Headers, Reply, error
from query_frontend.http.state import FrontendState
from query_frontend.routing.table import Route

_CHALLENGE = {"WWW-Authenticate": WWW_AUTHENTICATE}


def key_refusal(state: FrontendState, route: Route, headers: Headers) -> Reply | None:
    """``None`` if the request may use ``route``'s app, else the 401/403 to send."""
    hashes = route.key_hashes
    if not hashes:
        return None
    name = route.app.name
    token = bearer_token(header(headers))
    if token is None:
        return error(
            401,
            "unauthorized",
            f"app '{name}' needs an API key: send 'Authorization: Bearer <key>' with a key "
            f"made by conn.create_api_key('{name}') (or `schooner create-api-key {name}`)",
            _CHALLENGE,
        )
    digest = sha256_hex(token)
    if digest in hashes:
        return None
    if digest in state.routing.key_owners:
        return error(
            403,
            "forbidden",
            f"this API key belongs to another app, not to '{name}': send one of the keys "
            f"created for '{name}'",
        )
    return error(
        401,
        "unauthorized",
        f"this API key is not valid for app '{name}' (revoked, or never created): ask the "
        f"operator for a key of '{name}'",
        _CHALLENGE,
    )


Endpoint = Callable[[Request], Awaitable[Response]]


def admin_only(endpoint: Endpoint) -> Endpoint:
    """``endpoint``, answering 401 unless the request carries the admin token."""

    async def guarded(request: Request) -> Response:
        state: FrontendState = request.app.state.frontend
        check: AdminTokenCheck = state.admin_token
        authorization = request.headers.get("authorization")
        if check.allows(authorization):
            return await endpoint(request)
        reply = error(401, "unauthorized", check.failure(authorization), _CHALLENGE)
        return Response(reply.body, reply.status, headers=_CHALLENGE, media_type="application/json")

    guarded.__name__ = endpoint.__name__
    guarded.__doc__ = endpoint.__doc__
    return guarded
