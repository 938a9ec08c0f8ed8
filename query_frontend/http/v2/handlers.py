"""The Open Inference Protocol's REST routes, ``/v2/...``: an app is a V2 model.

``serve_v2`` answers every path under ``/v2`` (``query_frontend.app.FrontDoor`` hands
them over):

    GET  /v2                                      server metadata
    GET  /v2/health/live                          the process answers
    GET  /v2/health/ready                         as /healthz: routing loaded, not draining
    GET  /v2/models/{app}[/versions/{v}]          model metadata
    GET  /v2/models/{app}[/versions/{v}]/ready    a replica of the model (version) is connected
    POST /v2/models/{app}[/versions/{v}]/infer    inference

Inference is ``POST /{app}/predict`` in another dialect (``predict.handle_predict`` with
``INFER``): the same limits, API keys, SLO, default output, cache, batching, selection
policy, version pins and metrics. Every error is the protocol's ``{"error": "..."}``
with its status; the native handlers' ``{"error": code, "message": ...}`` replies are
rewritten here (``v2_error``), so they stay one code path.
"""

from __future__ import annotations

import importlib.metadata
from functools import partial
from typing import Any

import orjson

from query_frontend.http.asgi import Headers, Receive, Reply, Scope, Send, send_reply
from query_frontend.http.auth import key_refusal
from query_frontend.http.predict import Dialect, handle_predict
from query_frontend.http.respond import finish
from query_frontend.http.state import FrontendState
from query_frontend.http.v2.encode import answers_reply, one_model_reply
from query_frontend.http.v2.tensors import datatype_of, parse_infer
from query_frontend.routing.table import PinError, Route, app_model, pin

__all__ = ["serve_v2", "v2_error", "v2_post"]

#: What /v2 says of the server; the extension is Triton's binary tensor data.
EXTENSIONS = ("binary_tensor_data",)


def _server_version() -> str:
    try:
        return importlib.metadata.version("schooner")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout, not installed
        return "0+unknown"


_SERVER = orjson.dumps(
    {"name": "schooner", "version": _server_version(), "extensions": list(EXTENSIONS)}
)


def v2_error(status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()) -> Reply:
    return Reply(status, orjson.dumps({"error": message}), headers)


def as_v2(reply: Reply) -> Reply:
    """``reply`` with a native error body (``{"error": code, "message": ...}``) rewritten
    in the protocol's shape, ``{"error": message}``; anything else as it is."""
    if reply.status < 400:
        return reply
    try:
        message = orjson.loads(reply.body)["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return reply
    return v2_error(reply.status, str(message), reply.headers)


async def serve_v2(state: FrontendState, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer one request for a ``/v2`` path, through ASGI."""
    reply = await _route(state, scope["method"], scope["path"], scope["headers"], receive)
    if reply is not None:
        await send_reply(send, reply)


async def v2_post(
    state: FrontendState, rest: str, headers: Headers, receive: Receive
) -> Reply | None:
    """The reply to ``POST /v2/{rest}``: a hot-path handler of ``http.protocol``, which
    hands over what follows ``/v2/`` in a plain URL (no query, no escapes), as it hands
    ``POST /{app}/predict`` to ``handle_predict``: inference without an ASGI scope or a
    Task."""
    return await _route(state, "POST", f"/v2/{rest}", headers, receive)


async def _route(
    state: FrontendState, method: str, path: str, headers: Headers, receive: Receive
) -> Reply | None:
    parts = [p for p in path.split("/") if p][1:]  # after "v2"
    if not parts:
        return _get(method) or Reply(200, _SERVER)
    if parts[0] == "health" and len(parts) == 2 and parts[1] in ("live", "ready"):
        return _get(method) or _health(state, parts[1])
    if parts[0] != "models" or len(parts) < 2:
        return _no_route(path)
    app_name, rest = parts[1], parts[2:]
    version: str | None = None
    if rest[:1] == ["versions"]:
        if len(rest) < 2:
            return _no_route(path)
        version, rest = rest[1], rest[2:]
    if rest == ["infer"]:
        if method != "POST":
            return v2_error(405, f"{path} takes POST", ((b"allow", b"POST"),))
        return await _infer(state, app_name, version, headers, receive)
    if rest not in ([], ["ready"]):
        return _no_route(path)
    refused = _get(method)
    if refused is not None:
        return refused
    route = state.routing.routes.get(app_name)
    if route is None:
        return v2_error(404, f"no model (application) named '{app_name}' is registered")
    if route.key_hashes and (refusal := key_refusal(state, route, headers)) is not None:
        return as_v2(refusal)
    if version is not None:
        try:
            route = pin(state.routing.snapshot, route, version)
        except PinError as exc:
            return v2_error(400, str(exc))
    if rest:
        return _ready(state, route)
    return Reply(200, orjson.dumps(_metadata(state, route, version)))


def _get(method: str) -> Reply | None:
    """``None`` for a GET (or HEAD), else the 405 to send."""
    if method in ("GET", "HEAD"):
        return None
    return v2_error(405, "this path takes GET", ((b"allow", b"GET"),))


def _no_route(path: str) -> Reply:
    return v2_error(
        404,
        f"no such path: {path} (the protocol's paths are /v2, /v2/health/live, "
        "/v2/health/ready, /v2/models/{app}[/versions/{version}][/ready|/infer])",
    )


def _health(state: FrontendState, which: str) -> Reply:
    if which == "live":
        return Reply(200, b'{"live":true}')
    if not state.routing.ready.is_set():
        return v2_error(503, "not ready: configuration not loaded from Redis yet")
    if state.draining:
        return v2_error(503, "not ready: shutting down, answering the requests already accepted")
    return Reply(200, b'{"ready":true}')


def _ready(state: FrontendState, route: Route) -> Reply:
    """200 if some arm of ``route`` (a pinned route: its version) has a replica now."""
    name = route.app.name
    has = state.evaluator.has_replicas
    if route.stages:  # a pipeline answers when every stage can
        down = [
            stage.name
            for stage in route.stages
            if not any(a.key is not None and has(a.key) for a in stage.arms)
        ]
        if not down:
            return Reply(200, orjson.dumps({"name": name, "ready": True}))
        why = f"no replica of a model of {', '.join(down)} is connected"
        return v2_error(503, f"model (application) '{name}' is not ready: {why}")
    ready = [a for a in route.arms if a.key is not None and has(a.key)]
    if route.model_key is not None:  # one model answers: that one must be ready
        ready = [a for a in ready if a.key == route.model_key]
    if ready:
        return Reply(200, orjson.dumps({"name": name, "ready": True}))
    why = route.no_model_reason or "no replica of its model is connected"
    return v2_error(503, f"model (application) '{name}' is not ready: {why}")


def _metadata(state: FrontendState, route: Route, version: str | None) -> dict[str, Any]:
    app = route.app
    snap = state.routing.snapshot
    model = app_model(snap, app.name) if not route.stages else None  # a pipeline: no pin
    found = snap.models.get(model) if model is not None else None
    numeric = app.input_type.dtype is not None
    doc: dict[str, Any] = {
        "name": app.name,
        # The versions a request may pin: those of the app's model, when it has one.
        "versions": list(found.versions) if found is not None else [],
        "platform": "schooner",
        "inputs": [
            {
                "name": "input",
                "datatype": datatype_of(app.input_type),
                "shape": [-1, -1] if numeric else [-1],
            }
        ],
        # What a model returns is not declared: the datatype follows the outputs
        # (INT64, FP64 or BYTES; docs/wire-protocol.md, "Open Inference Protocol").
        "outputs": [{"name": "output", "datatype": "BYTES", "shape": [-1]}],
        "parameters": {
            "input_type": str(app.input_type),
            "slo_micros": app.slo_micros,
            "policy": route.policy,
            "models": [a.label or a.name for part in route.stages or (route,) for a in part.arms],
        },
    }
    if version is not None:
        doc["parameters"]["version"] = version
    elif route.model_key is not None:
        doc["parameters"]["version"] = route.model_key[1]
    return doc


INFER = Dialect(parse_infer, one_model_reply, answers_reply)


def _refused(
    state: FrontendState, app: str, path: str, headers: Headers, receive: Receive, reply: Reply
) -> Reply:
    """An inference refused before it reaches ``handle_predict``: its id, Server-Timing
    and access-log line all the same."""
    now = state.loop.time()
    trace = state.request_ids.trace(headers)
    trace.app = app
    return finish(state.access_log, trace, reply, lambda: path, now, now, receive)


async def _infer(
    state: FrontendState, app_name: str, version: str | None, headers: Headers, receive: Receive
) -> Reply | None:
    path = f"/v2/models/{app_name}" + (f"/versions/{version}" if version else "") + "/infer"
    header_length: int | None = None
    for name, value in headers:
        if name == b"inference-header-content-length":
            if not value.strip().isdigit():
                return _refused(
                    state,
                    app_name,
                    path,
                    headers,
                    receive,
                    v2_error(
                        400,
                        "Inference-Header-Content-Length must be the JSON header's length in bytes",
                    ),
                )
            header_length = int(value)
        elif name == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            encoding = value.decode("latin-1")
            why = f"Content-Encoding {encoding!r} is not supported: send the body as it is"
            return _refused(state, app_name, path, headers, receive, v2_error(415, why))
    dialect = INFER
    if header_length is not None or version is not None:
        parse = partial(parse_infer, header_length=header_length, pin=version)
        dialect = Dialect(parse, one_model_reply, answers_reply)
    reply = await handle_predict(state, app_name, headers, receive, dialect, path)
    if reply is None:
        return None
    if reply.status == 404 and state.routing.routes.get(app_name) is None:
        message = f"no model (application) named '{app_name}' is registered"
        return v2_error(404, message, reply.headers)
    return as_v2(reply)
