"""``POST /{app}/predict`` as a bare ASGI handler: the query frontend's hot path.

Every prediction request comes through here, so it skips what a web framework adds per
request (a Request object, middleware, the router's regex matching, a Response object):
py-spy showed those costing more than the prediction work itself. It reads the body
from ``receive``, parses it with orjson, runs the queries through the cache and the
dispatcher, and sends hand-built response bytes: model outputs arrive as JSON text from
the container and are spliced in without being parsed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from management_frontend.schema import App
from query_frontend.cache import Flight, PredictionCache, cache_key
from query_frontend.config import Config
from query_frontend.deadlines import answer_by
from query_frontend.dispatch import Dispatcher, OverloadedError, TooManyInputsError
from query_frontend.inputs import InputError, Item, TooManyItemsError, parse_body
from query_frontend.metrics import Metrics
from query_frontend.queries import Expired, Failure, Outcome, Query
from query_frontend.routing import Route, RoutingTable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON_HEADERS = ((b"content-type", b"application/json"),)


@dataclass
class FrontendState:
    config: Config
    routing: RoutingTable
    dispatcher: Dispatcher
    cache: PredictionCache
    metrics: Metrics
    query_ids: itertools.count[int] = field(default_factory=itertools.count)


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: bytes
    headers: tuple[tuple[bytes, bytes], ...] = ()


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    extra = tuple((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    return Reply(status, orjson.dumps({"error": code, "message": message}), extra)


async def send_reply(send: Send, reply: Reply) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", b"%d" % len(reply.body)), *reply.headers]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class BodyTooLargeError(Exception):
    pass


class ClientGoneError(Exception):
    pass


async def handle_predict(
    state: FrontendState, app_name: str, scope: Scope, receive: Receive, send: Send
) -> None:
    """Answer one ``POST /{app_name}/predict``."""
    loop = asyncio.get_running_loop()
    arrival = loop.time()
    route = state.routing.routes.get(app_name)
    if route is None:
        state.metrics.rejected(404)
        msg = f"no application named '{app_name}' is registered"
        await send_reply(send, error(404, "not_found", msg))
        return
    outcomes: list[Outcome] = []
    try:
        reply = await _predict(state, scope, receive, route, arrival, outcomes)
    except ClientGoneError:
        return  # nobody to answer; queries already submitted are answered and dropped
    state.metrics.request(app_name, reply.status, loop.time() - arrival, outcomes)
    await send_reply(send, reply)


async def _read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length":
            if value.isdigit() and int(value) > limit:
                raise BodyTooLargeError
            break
    message = await receive()
    body: bytes = message.get("body", b"")
    if message.get("more_body", False):
        chunks = [body]
        size = len(body)
        while message.get("more_body", False):
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLargeError
            chunks.append(chunk)
        body = b"".join(chunks)
    if message["type"] == "http.disconnect":
        raise ClientGoneError
    if len(body) > limit:
        raise BodyTooLargeError
    return body


async def _predict(
    state: FrontendState,
    scope: Scope,
    receive: Receive,
    route: Route,
    arrival: float,
    out: list[Outcome],
) -> Reply:
    """Answer one predict request of a known app; ``out`` receives the query outcomes."""
    app = route.app
    limit = state.config.max_body_bytes
    try:
        body = await _read_body(scope, receive, limit)
    except BodyTooLargeError:
        return error(413, "too_large", f"request body is over the limit of {limit} bytes")
    try:
        items, is_batch = parse_body(body, app.input_type, state.config.max_inputs_per_request)
    except TooManyItemsError as exc:
        return error(413, "too_large", f"app '{app.name}': {exc}")
    except InputError as exc:
        return error(400, "invalid_input", f"app '{app.name}' ({app.input_type}): {exc}")

    deadline = answer_by(arrival, app.slo_micros / 1e6, state.dispatcher.timer_lag.lag(arrival))
    ids = [next(state.query_ids) for _ in items]
    if route.model_key is None:
        out.extend([Expired(route.no_model_reason)] * len(items))
    else:
        try:
            out.extend(await _run(state, route.model_key, app, items, ids, deadline))
        except OverloadedError as exc:
            return error(503, "overloaded", f"{exc}; retry shortly", {"Retry-After": "1"})
        except TooManyInputsError as exc:
            return error(413, "too_large", str(exc))
    return _respond(ids, out, app.default_output, is_batch)


async def _run(
    state: FrontendState,
    key: tuple[str, str],
    app: App,
    items: list[Item],
    ids: list[int],
    deadline: float,
) -> list[Outcome]:
    cache = state.cache
    use_cache = cache.enabled and app.cache_enabled
    founds: list[bytes | asyncio.Future[Outcome] | Flight | None]
    if use_cache and len(items) == 1:  # the common request, answered from the cache
        found = cache.lookup(cache_key(key, items[0]), deadline)
        if isinstance(found, bytes):
            return [found]
        founds = [found]
    elif use_cache:
        founds = [cache.lookup(cache_key(key, item), deadline) for item in items]
    else:
        founds = [None] * len(items)

    loop = asyncio.get_running_loop()
    dispatcher = state.dispatcher
    q = dispatcher.queue(key, app.input_type)
    waits: list[bytes | asyncio.Future[Outcome]] = []
    queries: list[Query] = []
    for qid, item, hit in zip(ids, items, founds, strict=True):
        if isinstance(hit, bytes | asyncio.Future):
            waits.append(hit)  # a hit, or joined an identical query already in flight
            continue
        query = Query(qid, item, deadline, loop.create_future())
        query.timer = loop.call_at(deadline, dispatcher.expire, query, q)
        if hit is not None:
            cache.attach(hit, query.future)  # this query leads: its outcome ends the flight
        queries.append(query)
        waits.append(query.future)
    if queries:
        try:
            dispatcher.submit(q, queries)
        except (OverloadedError, TooManyInputsError) as exc:
            for query in queries:
                query.resolve(Expired(str(exc)))  # answers any query that joined these
            raise
    return [w if isinstance(w, bytes) else await w for w in waits]


def _respond(ids: list[int], outcomes: list[Outcome], default: Any, is_batch: bool) -> Reply:
    parts: list[bytes] = []
    for qid, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, bytes):
            parts.append(b'{"query_id":%d,"output":%b,"default":false}' % (qid, outcome))
        elif isinstance(outcome, Failure):
            return error(500, "model_error", f"query {qid}: {outcome.message}")
        else:
            parts.append(
                orjson.dumps(
                    {
                        "query_id": qid,
                        "output": default,
                        "default": True,
                        "default_explanation": outcome.reason,
                    }
                )
            )
    body = b'{"batch_predictions":[%b]}' % b",".join(parts) if is_batch else parts[0]
    return Reply(200, body)
