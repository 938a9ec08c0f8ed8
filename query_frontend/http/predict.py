"""``POST /{app}/predict`` as a bare ASGI handler: the query frontend's hot path.

Every prediction request comes through here, so it skips what a web framework adds per
request (a Request object, middleware, the router's regex matching, a Response object):
py-spy showed those costing more than the prediction work itself. It reads the body
from ``receive``, parses it with orjson, runs the queries through the cache and the
dispatcher, and sends hand-built response bytes: model outputs arrive as JSON text from
the container and are spliced in without being parsed.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter
from typing import Any, NamedTuple

import orjson

from model_container.protocol import InputType
from query_frontend.batching.dispatch import OverloadedError, TooManyInputsError
from query_frontend.batching.quarantine import QuarantinedError
from query_frontend.composition import StageOutputError, StageStats
from query_frontend.composition.run import REFUSALS
from query_frontend.http.asgi import (
    BodyTooLargeError,
    ClientGoneError,
    Headers,
    Receive,
    Reply,
    deadline_for,
    error,
    model_failed,
    read_body,
    refused,
)
from query_frontend.http.auth import key_refusal
from query_frontend.http.budget import BudgetFullError, Hold
from query_frontend.http.inputs import InputError, TooManyItemsError, parse_request
from query_frontend.http.offload import ParserUnavailableError
from query_frontend.http.respond import GONE, finish
from query_frontend.http.state import FrontendState
from query_frontend.observability import tracing
from query_frontend.queries import Expired, Failure, Item, Outcome, RequestTrace
from query_frontend.routing.table import PinError, Route, pin
from query_frontend.selection.ask import Answer, answers, ask, learned_view

__all__ = ["NATIVE", "Dialect", "FrontendState", "handle_predict"]

#: A parse of a request body: ``(items, shape, uid, version pin)``; ``shape`` is the
#: dialect's own (native: whether it was a batch) and goes back to its responders.
Parse = Callable[[bytes, InputType, int], tuple[list[Item], Any, str | None, str | None]]


class Dialect(NamedTuple):
    """How a prediction request is spoken: the parse of its body, and the responses to
    the answers of a one-model route and of a route with several arms. The native one
    (``NATIVE``) and the Open Inference Protocol's (``http.v2``) share everything else:
    limits, keys, SLO, cache, batching, selection, pins and metrics. ``parse`` must be
    picklable (large bodies are parsed in a worker)."""

    parse: Parse
    one_model: Callable[[list[int], list[Outcome], Route, Any], Reply]
    answers: Callable[[list[int], list[Answer], Route, Any], Reply]


def _unknown_version(exc: PinError) -> Reply:
    """400 for a pin the app cannot honour; with Clipper's ``"cause"`` when the model
    lacks the version (Clipper's clients read it)."""
    body: dict[str, str] = {"error": "unknown_version", "message": str(exc)}
    if exc.cause:
        body["cause"] = exc.cause
    return Reply(400, orjson.dumps(body))


_ANSWER = b'{"query_id":%d,"output":%b,"default":false,"models":%b}'


def _respond(ids: list[int], outcomes: list[Outcome], route: Route, is_batch: bool) -> Reply:
    """Answers of a one-model route: its ``models_json`` names who answered."""
    if not is_batch and isinstance(outcome := outcomes[0], bytes):  # the usual answer
        return Reply(200, _ANSWER % (ids[0], outcome, route.models_json))
    app = route.app
    models = route.models_json
    default = app.default_output
    parts: list[bytes] = []
    for qid, outcome in zip(ids, outcomes, strict=True):
        if isinstance(outcome, bytes):
            parts.append(_ANSWER % (qid, outcome, models))
        elif isinstance(outcome, Failure):
            return model_failed(qid, outcome, app)
        else:
            parts.append(_default(qid, default, outcome.reason))
    return Reply(200, _join(parts, is_batch))


def _respond_answers(ids: list[int], answers: list[Answer], route: Route, is_batch: bool) -> Reply:
    app = route.app
    default = app.default_output
    parts: list[bytes] = []
    for qid, ans in zip(ids, answers, strict=True):
        outcome = ans.outcome
        if isinstance(outcome, Failure):
            return model_failed(qid, outcome, app)
        if isinstance(outcome, Expired):
            parts.append(_default(qid, default, outcome.reason))
            continue
        extra = b""
        if ans.missing:
            extra = b',"partial":true,"missing":%b,"partial_explanation":%b' % (
                orjson.dumps([m for m, _ in ans.missing]),
                orjson.dumps("; ".join(f"{m}: {why}" for m, why in ans.missing)),
            )
        parts.append(
            b'{"query_id":%d,"output":%b,"default":false,"models":%b%b}'
            % (qid, outcome, orjson.dumps(ans.models), extra)
        )
    return Reply(200, _join(parts, is_batch))


def _default(qid: int, default: Any, reason: str) -> bytes:
    return orjson.dumps(
        {
            "query_id": qid,
            "output": default,
            "default": True,
            "default_explanation": reason,
            "models": [],
        }
    )


def _join(parts: list[bytes], is_batch: bool) -> bytes:
    return b'{"batch_predictions":[%b]}' % b",".join(parts) if is_batch else parts[0]


#: Schooner's own ``{"input": ...}`` / ``{"input_batch": [...]}`` (``inputs.parse_request``).
NATIVE = Dialect(parse_request, _respond, _respond_answers)


async def handle_predict(
    state: FrontendState,
    app_name: str,
    headers: Headers,
    receive: Receive,
    dialect: Dialect = NATIVE,
    path: str = "",
) -> Reply | None:
    """The answer to one ``POST /{app_name}/predict`` (``None``: the client is gone), or,
    given another ``dialect``, to the same request spoken in it (at ``path``, for the
    access log). Every reply says the request's id and where its time went."""
    loop = state.loop
    arrival = loop.time()
    trace = state.request_ids.trace(headers)
    trace.app = app_name
    if tracing.ENABLED:
        tracing.start(trace, headers, path or f"/{app_name}/predict", arrival)
    route = state.routing.routes.get(app_name)
    if route is None:
        state.metrics.rejected(404)
        reply = error(404, "not_found", f"no application named '{app_name}' is registered")
    elif route.key_hashes and (refusal := key_refusal(state, route, headers)) is not None:
        state.metrics.request(app_name, refusal.status, perf_counter() - trace.started, [])
        reply = refusal
    else:
        outcomes: list[Outcome] = []
        trace.outcomes = outcomes
        ids: list[int] = []  # the query ids, for the defaults the metrics remember
        hold = Hold(state.bodies, app_name)
        try:
            reply = await _predict(
                state, headers, receive, route, arrival, outcomes, ids, hold, dialect, trace
            )
        except ClientGoneError:  # nobody to answer; queries submitted are answered and dropped
            path_of = lambda: path or f"/{app_name}/predict"  # noqa: E731
            finish(state.access_log, trace, GONE, path_of, arrival, loop.time(), receive)
            return None
        finally:
            hold.release()
        seconds = perf_counter() - trace.started
        state.metrics.request(app_name, reply.status, seconds, outcomes, ids, trace.id)
    return finish(
        state.access_log,
        trace,
        reply,
        lambda: path or f"/{app_name}/predict",
        arrival,
        loop.time(),
        receive,
    )


async def _predict(
    state: FrontendState,
    headers: Headers,
    receive: Receive,
    route: Route,
    arrival: float,
    out: list[Outcome],
    ids: list[int],
    hold: Hold,
    dialect: Dialect,
    trace: RequestTrace,
) -> Reply:
    """Answer one predict request of a known app; ``out`` receives the query outcomes,
    ``ids`` their query ids.
    ``hold`` holds the body's bytes of the frontend's budget until the caller releases it."""
    app = route.app
    try:
        body = await read_body(headers, receive, state.config.max_body_bytes, hold)
        max_items = state.config.max_inputs_per_request
        parser = state.parser
        if parser.inline(body):  # the usual body: no coroutine to await
            items, shape, uid, version = dialect.parse(body, app.input_type, max_items)
        else:
            items, shape, uid, version = await parser.parse_items(
                dialect.parse, body, app.input_type, max_items
            )
    except (BodyTooLargeError, BudgetFullError) as exc:
        return refused(exc)
    except ParserUnavailableError as exc:
        return error(503, "unavailable", str(exc), {"Retry-After": "1"})
    except TooManyItemsError as exc:
        return error(413, "too_large", f"app '{app.name}': {exc}")
    except InputError as exc:
        return error(400, "invalid_input", f"app '{app.name}' ({app.input_type}): {exc}")
    if version is not None:  # a pin: that version of the app's model answers
        try:
            route = pin(state.routing.snapshot, route, version)
        except PinError as exc:
            return _unknown_version(exc)
    trace.route = route

    deadline = deadline_for(state, app, arrival)
    query_ids = state.query_ids
    if len(items) == 1:
        ids.append(next(query_ids))
    else:
        ids.extend([next(query_ids) for _ in items])
    try:
        if route.model_key is not None:  # one model: the common case, kept short
            # Evaluator.evaluate, inlined: two coroutines fewer for a cache hit.
            submit = state.evaluator.submit
            for wait in submit(route.model_key, app, items, ids, deadline, trace=trace):
                out.append(wait if isinstance(wait, bytes) else await wait)
            if trace.span is not None:
                trace.answered_at = state.loop.time()
            return dialect.one_model(ids, out, route, shape)
        if route.stages:
            return await _pipeline(
                state, route, items, ids, deadline, uid, out, dialect, shape, trace
            )
        if route.no_model_reason:
            out.extend([Expired(route.no_model_reason)] * len(items))
            return dialect.one_model(ids, out, route, shape)
        view = learned_view(state.policies, route, uid)
        asked = await ask(state.evaluator, state.rng, route, items, ids, deadline, uid, view, trace)
    except (OverloadedError, TooManyInputsError) as exc:
        return refused(exc)
    except QuarantinedError as exc:
        # Retrying cannot help until the time it names: the input itself is the problem.
        return error(422, "input_quarantined", f"app '{app.name}': {exc}")
    if trace.span is not None:
        trace.answered_at = state.loop.time()
    trace.outcomes = None
    trace.answers = answered = answers(route, asked, view)
    out.extend(a.outcome for a in answered)
    state.metrics.answered_by(app.name, answered)
    return dialect.answers(ids, answered, route, shape)


async def _pipeline(
    state: FrontendState,
    route: Route,
    items: list[Item],
    ids: list[int],
    deadline: float,
    uid: str | None,
    out: list[Outcome],
    dialect: Dialect,
    shape: Any,
    trace: RequestTrace,
) -> Reply:
    """Answer the inputs of a pipeline app (``composition``), stage after stage."""
    app = route.app
    stats: list[StageStats] = []
    try:
        answered = await state.pipeline.run(route.stages, items, ids, deadline, uid, trace, stats)
    except StageOutputError as exc:
        _count_stages(state, route, stats, exc.stage)
        return error(502, "pipeline_output_rejected", f"app '{app.name}': {exc}")
    except REFUSALS:  # answered by the caller (429, 503, 422); counted here, per stage
        _count_stages(state, route, stats, None)
        raise
    if trace.span is not None:
        trace.answered_at = state.loop.time()
    _count_stages(state, route, stats, None)
    trace.outcomes = None
    trace.answers = answered
    out.extend(a.outcome for a in answered)
    state.metrics.answered_by(app.name, answered)
    return dialect.answers(ids, answered, route, shape)


def _count_stages(
    state: FrontendState, route: Route, stats: list[StageStats], refused: Route | None
) -> None:
    """The per-stage metrics of one request; ``refused``: the stage whose output the next
    stage could not take (an error of that stage)."""
    record = state.metrics.stage
    for number, (stage, done) in enumerate(zip(route.stages, stats, strict=False), 1):
        errors = done.errors + (1 if stage is refused else 0)
        record(route.app.name, number, done.seconds, done.defaults, errors)
