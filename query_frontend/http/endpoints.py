"""The query frontend's HTTP endpoints other than predict: health, status, metrics and
the OpenAPI document.

These are Starlette routes; ``/status`` and ``/metrics`` need the admin token
(``auth.admin_only``), ``/healthz`` and ``/openapi.json`` (``http.openapi``: the same
bytes for everyone, naming no app) do not. ``POST /{app}/predict`` and
``POST /{app}/update`` are served by ``predict.py`` and ``update.py`` before a request
reaches Starlette (see ``query_frontend.app.FrontDoor``).
"""

from __future__ import annotations

from dataclasses import asdict

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from management_frontend.state.keys import arm_name
from query_frontend.http.asgi import error
from query_frontend.http.auth import admin_only
from query_frontend.http.openapi import OPENAPI_JSON
from query_frontend.http.state import FrontendState
from query_frontend.routing import table

JSON = "application/json"


async def healthz(request: Request) -> Response:
    state: FrontendState = request.app.state.frontend
    if not state.routing.ready.is_set():
        reply = error(503, "starting", "configuration not loaded from Redis yet")
        return Response(reply.body, reply.status, media_type=JSON)
    if state.draining:  # readiness probes: send new requests elsewhere
        reply = error(503, "draining", "shutting down: answering the requests already accepted")
        return Response(reply.body, reply.status, media_type=JSON)
    return Response(b'{"status":"ok"}', media_type=JSON)


async def status(request: Request) -> Response:
    state: FrontendState = request.app.state.frontend
    apps = {name: _route_json(r) for name, r in sorted(state.routing.routes.items())}
    body = {
        "frontend": state.config.frontend_id,
        "ready": state.routing.ready.is_set(),
        "apps": apps,
        "models": state.dispatcher.status(),
        "quarantine": state.dispatcher.quarantine_status(),
        "cache": asdict(state.cache.stats()),
        "bodies": {  # bytes of request bodies held now, and the bounds (http/budget.py)
            "held_bytes": state.bodies.held,
            "limit_bytes": state.bodies.limit,
            "app_limit_bytes": state.bodies.app_limit,
        },
        "draining": state.draining,
    }
    if state.processes is not None:
        body["supervision"] = state.processes.status()
    return Response(orjson.dumps(body), media_type=JSON)


def _arms_json(route: table.Route) -> dict[str, str | None]:
    """Each arm and the version it routes to now (None: it cannot be served)."""
    return {a.name: arm_name(*a.key) if a.key else None for a in route.arms}


def _route_json(route: table.Route) -> dict[str, object]:
    arms = _arms_json(route)
    first = route.arms[0].key if route.arms else None
    shown: dict[str, object] = {
        "policy": route.policy,
        "arms": arms,
        # The first arm's version: what a single-model app routes to.
        "model": arm_name(*first) if first else None,
        "models": sorted({m for m in arms.values() if m}),
        "reason": route.no_model_reason or None,
        "slo_micros": route.app.slo_micros,
        "cache_enabled": route.app.cache_enabled,
        # Whether predict and update need an API key (how many: the management API says).
        "api_keys": bool(route.key_hashes),
    }
    if route.stages:  # a pipeline: each stage as it is served now (stage 1 is above too)
        shown["stages"] = [
            {
                "policy": stage.policy,
                "policy_epoch": stage.app.policy_epoch,
                "arms": _arms_json(stage),
                "input_type": str(stage.app.input_type),
                "reason": stage.no_model_reason or None,
            }
            for stage in route.stages
        ]
        shown["models"] = sorted(
            {m for stage in route.stages for m in _arms_json(stage).values() if m}
        )
    return shown


async def openapi(request: Request) -> Response:
    return Response(OPENAPI_JSON, media_type=JSON)


async def metrics(request: Request) -> Response:
    state: FrontendState = request.app.state.frontend
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", admin_only(metrics), methods=["GET"]),
    Route("/status", admin_only(status), methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
