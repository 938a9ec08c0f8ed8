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
    digest = _digest(state.key_digests, header(headers))
    if digest is None:
        return error(
            401,
            "unauthorized",
            f"app '{name}' needs an API key: send 'Authorization: Bearer <key>' with a key "
            f"made by conn.create_api_key('{name}') (or `schooner create-api-key {name}`)",
            _CHALLENGE,
        )
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


#: Authorization headers remembered with their key's digest (``FrontendState.key_digests``);
#: past this many, the memory starts afresh (clients may present any number of keys).
MAX_REMEMBERED_KEYS = 4096
_REMEMBERED_HEADER_BYTES = 256  # a key's header is ~50 bytes


def _digest(remembered: dict[bytes, str], authorization: bytes | None) -> str | None:
    """The sha256 of the bearer token in ``authorization`` (``None``: no bearer token),
    remembered by the header's bytes: a client sends the same header with every request,
    and parsing and hashing it again was a tenth of a keyed request's CPU."""
    if authorization is None:
        return None
    digest = remembered.get(authorization)
    if digest is None:
        token = bearer_token(authorization)
        if token is None:
            return None
        digest = sha256_hex(token)
        if len(authorization) <= _REMEMBERED_HEADER_BYTES:  # at most ~1 MiB remembered
            if len(remembered) >= MAX_REMEMBERED_KEYS:
                remembered.clear()
            remembered[authorization] = digest
    return digest


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
