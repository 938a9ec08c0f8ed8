"""HTTP endpoints of the query frontend: predict, health and status.

The predict path is plain Starlette with orjson and hand-built response bytes: no
validation framework on the hot path. Model outputs arrive as JSON text from the
container and are spliced into the response without being parsed.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from query_frontend.cache import PredictionCache, cache_key
from query_frontend.config import Config
from query_frontend.dispatch import Dispatcher, OverloadedError, TooManyInputsError
from query_frontend.inputs import InputError, Item, TooManyItemsError, parse_body
from query_frontend.metrics import Metrics
from query_frontend.queries import Expired, Failure, Outcome, Query
from query_frontend.routing import Route as AppRoute
from query_frontend.routing import RoutingTable

JSON = "application/json"


@dataclass
class FrontendState:
    config: Config
    routing: RoutingTable
    dispatcher: Dispatcher
    cache: PredictionCache
    metrics: Metrics
    query_ids: itertools.count[int] = field(default_factory=itertools.count)


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps({"error": code, "message": message})
    return Response(body, status_code=status, media_type=JSON, headers=headers)


class BodyTooLargeError(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


async def predict(request: Request) -> Response:
    state: FrontendState = request.app.state.frontend
    app_name = request.path_params["app"]
    route = state.routing.routes.get(app_name)
    if route is None:
        state.metrics.rejected(404)
        return error(404, "not_found", f"no application named '{app_name}' is registered")
    loop = asyncio.get_running_loop()
    arrival = loop.time()
    outcomes: list[Outcome] = []
    response = await _predict(state, request, route, arrival, outcomes)
    state.metrics.request(app_name, response.status_code, loop.time() - arrival, outcomes)
    return response


async def _predict(
    state: FrontendState, request: Request, route: AppRoute, arrival: float, out: list[Outcome]
) -> Response:
    """Answer one predict request of a known app; ``out`` receives the query outcomes."""
    app = route.app
    limit = state.config.max_body_bytes
    try:
        body = await _read_body(request, limit)
    except BodyTooLargeError:
        return error(413, "too_large", f"request body is over the limit of {limit} bytes")
    try:
        items, is_batch = parse_body(body, app.input_type, state.config.max_inputs_per_request)
    except TooManyItemsError as exc:
        return error(413, "too_large", f"app '{app.name}': {exc}")
    except InputError as exc:
        return error(400, "invalid_input", f"app '{app.name}' ({app.input_type}): {exc}")

    slo = app.slo_micros / 1e6
    # Answer a little before the objective so the default is on the wire in time.
    deadline = arrival + slo - min(0.001, 0.1 * slo)
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
    app: Any,
    items: list[Item],
    ids: list[int],
    deadline: float,
) -> list[Outcome]:
    loop = asyncio.get_running_loop()
    dispatcher, cache = state.dispatcher, state.cache
    q = dispatcher.queue(key, app.input_type)
    waits: list[bytes | asyncio.Future[Outcome]] = []
    queries: list[Query] = []
    for qid, item in zip(ids, items, strict=True):
        found = cache.lookup(cache_key(key, item), deadline) if cache.enabled else None
        if isinstance(found, bytes | asyncio.Future):
            waits.append(found)  # a hit, or joined an identical query already in flight
            continue
        query = Query(qid, item, deadline, loop.create_future())
        query.timer = loop.call_at(deadline, dispatcher.expire, query, q)
        if found is not None:
            cache.attach(found, query.future)  # this query leads: its outcome ends the flight
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


def _respond(ids: list[int], outcomes: list[Outcome], default: Any, is_batch: bool) -> Response:
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
    return Response(body, media_type=JSON)


async def healthz(request: Request) -> Response:
    state: FrontendState = request.app.state.frontend
    if not state.routing.ready.is_set():
        return error(503, "starting", "configuration not loaded from Redis yet")
    return Response(b'{"status":"ok"}', media_type=JSON)


async def status(request: Request) -> Response:
    state: FrontendState = request.app.state.frontend
    apps = {
        name: {
            "model": f"{r.model_key[0]}:{r.model_key[1]}" if r.model_key else None,
            "reason": r.no_model_reason or None,
            "slo_micros": r.app.slo_micros,
        }
        for name, r in sorted(state.routing.routes.items())
    }
    body = {
        "frontend": state.config.frontend_id,
        "ready": state.routing.ready.is_set(),
        "apps": apps,
        "models": state.dispatcher.status(),
        "cache": asdict(state.cache.stats()),
    }
    return Response(orjson.dumps(body), media_type=JSON)


async def metrics(request: Request) -> Response:
    state: FrontendState = request.app.state.frontend
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/status", status, methods=["GET"]),
    Route("/{app}/predict", predict, methods=["POST"]),
]
