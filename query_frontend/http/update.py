"""``POST /{app}/update``: feedback that teaches the app's selection policy.

The body is ``{"input": ..., "label": ..., "uid"?: ..., "feedback_id"?: ...}``. The
input goes to the arm(s) the policy picks, exactly as a query would (``split`` and
``exp3`` draw one arm, with its probability; ``exp4`` asks every arm); each answer is
compared with the label by the app's loss, and what that teaches
(``selection.feedback.learn``) is added to the app's state and, with a uid, the user's,
in Redis. The answer says who answered and their losses:

    {"query_id": 7, "models": ["m1:1"], "losses": {"m1:1": 0.0}}

Every policy counts the losses (a split reports each arm's mean loss: an A/B test);
exp3 and exp4 also move their weights, and keep a user's part when there is a uid.
Feedback is stored before the answer is sent: a 200 means it counts. A 503 means it
could not be confirmed; sent again with the same ``feedback_id`` it counts at most once
(``"duplicate": true`` when it had been stored after all).
"""

from __future__ import annotations

from typing import Any

import orjson
from redis.exceptions import RedisError

from management_frontend.state.policy import DUPLICATE, EXP4, LEARNING, STALE
from model_container.protocol import InputType
from query_frontend.batching.dispatch import OverloadedError, TooManyInputsError
from query_frontend.composition import StageOutputError
from query_frontend.composition.feedback import StageUnansweredError, Step, walk
from query_frontend.http.asgi import (
    BodyTooLargeError,
    ClientGoneError,
    Headers,
    Receive,
    Reply,
    deadline_for,
    error,
    read_body,
    refused,
)
from query_frontend.http.auth import key_refusal
from query_frontend.http.budget import BudgetFullError, Hold
from query_frontend.http.inputs import InputError, convert, load_object, user_id
from query_frontend.http.offload import ParserUnavailableError
from query_frontend.http.respond import GONE, finish
from query_frontend.http.state import FrontendState
from query_frontend.observability import tracing
from query_frontend.queries import Failure, Item, RequestTrace
from query_frontend.routing.table import Route
from query_frontend.selection.ask import arm_label, ask, learned_view
from query_frontend.selection.choose import ensemble_weights
from query_frontend.selection.feedback import Answered, LabelError, Lesson, learn

_HINT = '{"input": ..., "label": ..., "uid": ... (optional), "feedback_id": ... (optional)}'
MAX_FEEDBACK_ID_LENGTH = 128


def _feedback_id(doc: dict[str, object]) -> str | None:
    value = doc.get("feedback_id")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= MAX_FEEDBACK_ID_LENGTH:
        raise InputError(
            f'"feedback_id" must be a string of 1 to {MAX_FEEDBACK_ID_LENGTH} characters, '
            f"got {str(value)[:40]!r}: it makes a retried feedback count once"
        )
    return value


def parse_feedback(body: bytes, input_type: InputType) -> tuple[Item, Any, str | None, str | None]:
    """The input, label, uid and feedback id of an update body; ``InputError`` saying
    what to send instead."""
    doc = load_object(body, _HINT)
    for field in ("input", "label"):
        if field not in doc:
            raise InputError(f'the body has no "{field}" field: send {_HINT}')
    item = convert(doc["input"], input_type, "input")
    return item, doc["label"], user_id(doc), _feedback_id(doc)


async def handle_update(
    state: FrontendState, app_name: str, headers: Headers, receive: Receive
) -> Reply | None:
    """The answer to one ``POST /{app_name}/update`` (``None``: the client is gone),
    saying the request's id and where its time went."""
    loop = state.loop
    arrival = loop.time()
    trace = state.request_ids.trace(headers)
    trace.app = app_name
    if tracing.ENABLED:
        tracing.start(trace, headers, f"/{app_name}/update", arrival)
    route = state.routing.routes.get(app_name)
    if route is None:
        reply = error(404, "not_found", f"no application named '{app_name}' is registered")
    elif route.key_hashes and (refusal := key_refusal(state, route, headers)) is not None:
        reply = refusal
    else:
        trace.route = route
        hold = Hold(state.bodies, app_name)
        try:
            reply = await _update(state, route, headers, receive, hold, trace)
        except ClientGoneError:  # logged (status 499), not answered
            path_of = lambda: f"/{app_name}/update"  # noqa: E731
            finish(state.access_log, trace, GONE, path_of, arrival, loop.time(), receive)
            return None
        finally:
            hold.release()
    return finish(
        state.access_log,
        trace,
        reply,
        lambda: f"/{app_name}/update",
        arrival,
        loop.time(),
        receive,
    )


async def _update(
    state: FrontendState,
    route: Route,
    headers: Headers,
    receive: Receive,
    hold: Hold,
    trace: RequestTrace,
) -> Reply:
    app = route.app
    try:
        body = await read_body(headers, receive, state.config.max_body_bytes, hold)
        item, label, uid, feedback_id = await state.parser.parse(
            parse_feedback, body, app.input_type
        )
    except (BodyTooLargeError, BudgetFullError) as exc:
        return refused(exc)
    except ParserUnavailableError as exc:
        return error(503, "unavailable", str(exc), {"Retry-After": "1"})
    except InputError as exc:
        return error(400, "invalid_input", f"app '{app.name}' ({app.input_type}): {exc}")
    if route.model_key is None and route.no_model_reason:
        return error(409, "no_model", f"app '{app.name}' cannot learn: {route.no_model_reason}")
    if route.stages:
        return await _update_pipeline(state, route, item, label, uid, feedback_id, trace)

    loop = state.loop
    arrival = loop.time()
    deadline = deadline_for(state, app, arrival)
    qid = next(state.query_ids)
    epoch = app.policy_epoch
    view = learned_view(state.policies, route, uid)
    state.policies.app_state(app.name, epoch)  # if not copied yet, read from Redis meanwhile
    try:  # one arm or several: asked as a query of the app would be
        (asked,) = await ask(
            state.evaluator, state.rng, route, [item], [qid], deadline, uid, view, trace
        )
    except (OverloadedError, TooManyInputsError) as exc:  # too many inputs: not with one
        return refused(exc)

    if trace.span is not None:
        trace.answered_at = loop.time()
    got = [(arm, o) for arm, o in asked.outcomes if isinstance(o, bytes)]
    answered = [Answered(arm.name, arm_label(arm), orjson.loads(o)) for arm, o in got]
    trace.models = [a.label for a in answered]
    silent = [(arm_label(arm), o) for arm, o in asked.outcomes if not isinstance(o, bytes)]
    if not answered:
        expose = app.expose_model_errors
        failed = [f"{m}: {o.told(expose)}" for m, o in silent if isinstance(o, Failure)]
        if failed:
            return error(500, "model_error", f"query {qid}: {'; '.join(failed)}")
        why = "; ".join(f"{m}: {getattr(o, 'reason', '')}" for m, o in silent)
        return error(
            503,
            "no_answer",
            f"no model answered the input in time ({why}): nothing was learned, send the "
            "feedback again",
            {"Retry-After": "1"},
        )
    weights: list[float] = []
    if route.params.policy == EXP4:
        weights = ensemble_weights(route, [arm for arm, _ in got], view)
    try:
        lesson = _lesson(
            state, app.name, epoch, route, answered, label, asked.choice.probability, weights
        )
    except LabelError as exc:
        return error(400, "invalid_label", f"app '{app.name}': {exc}")
    # A user's own part matters only to policies that choose by what was learned.
    learner = uid if route.policy in LEARNING else None
    try:
        status = await state.policies.record(app.name, epoch, learner, lesson.arms, feedback_id)
    except (RedisError, OSError, TimeoutError) as exc:
        return _unconfirmed(exc, feedback_id)
    if status == STALE:
        return error(
            409,
            "policy_changed",
            f"the policy of app '{app.name}' was changed or reset while this feedback was "
            "in flight: nothing was learned; send it again if it still applies",
        )
    answer: dict[str, object] = {
        "query_id": qid,
        "models": [a.label for a in answered],
        "losses": lesson.losses,
    }
    if silent:
        answer["missing"] = [m for m, _ in silent]
    if status == DUPLICATE:
        answer["duplicate"] = True  # counted before: not counted again
    return Reply(200, orjson.dumps(answer))


def _lesson(
    state: FrontendState,
    app: str,
    epoch: str,
    route: Route,
    answered: list[Answered],
    label: Any,
    probability: float,
    weights: list[float],
) -> Lesson:
    """What one feedback teaches the policy of ``route`` (an app, or a stage of one),
    measured against what its learned state under ``epoch`` holds; ``LabelError`` if the
    label cannot be used."""
    learned = state.policies.app_state(app, epoch)
    names = [a.arm for a in answered]
    return learn(
        route.params,
        answered,
        label,
        probability=probability,
        weights=weights,
        scale=learned.loss_totals(),
        starts=dict(zip(names, learned.log_weights(names), strict=True)),
    )


def _unconfirmed(exc: BaseException, feedback_id: str | None, what: str = "") -> Reply:
    """The 503 for feedback Redis did not confirm storing (``what``: of which stage)."""
    retry = "send it again with the same feedback_id" if feedback_id else "send it again"
    return error(
        503,
        "unavailable",
        f"Redis did not confirm storing the feedback{what} ({exc or type(exc).__name__}); {retry}",
        {"Retry-After": "1"},
    )


async def _update_pipeline(
    state: FrontendState,
    route: Route,
    item: Item,
    label: Any,
    uid: str | None,
    feedback_id: str | None,
    trace: RequestTrace,
) -> Reply:
    """Feedback on a pipeline app: every stage records its arms' losses, judged by the
    pipeline's answer; exp3 and exp4 stages learn (``composition.feedback``)."""
    app = route.app
    for stage in route.stages:  # as for an app without a model: retrying cannot help
        if stage.model_key is None and stage.no_model_reason:
            reason = f"{stage.name}: {stage.no_model_reason}"
            return error(409, "no_model", f"app '{app.name}' cannot learn: {reason}")
    loop = state.loop
    deadline = deadline_for(state, app, loop.time())
    qid = next(state.query_ids)
    for stage in route.stages:  # if not copied yet, read from Redis meanwhile
        state.policies.app_state(app.name, stage.app.policy_epoch)
    try:
        steps = await walk(state.pipeline, route.stages, item, qid, deadline, uid, trace)
    except (OverloadedError, TooManyInputsError) as exc:
        return refused(exc)
    except StageOutputError as exc:
        return error(502, "pipeline_output_rejected", f"app '{app.name}': {exc}")
    except StageUnansweredError as exc:
        if exc.failed:
            return error(500, "model_error", f"query {qid}: {exc}: nothing was learned")
        return error(
            503,
            "no_answer",
            f"the pipeline did not answer the input in time ({exc}): nothing was learned, "
            "send the feedback again",
            {"Retry-After": "1"},
        )
    if trace.span is not None:
        trace.answered_at = loop.time()
    trace.models = [arm_label(arm) for step in steps for arm, _ in step.said]
    lessons: list[Lesson] = []
    for step in steps:
        stage = step.stage
        weights = [step.weights[a.arm] for a in step.judged] if step.weights else []
        epoch = stage.app.policy_epoch
        try:
            lesson = _lesson(
                state, app.name, epoch, stage, step.judged, label, step.probability, weights
            )
        except LabelError as exc:
            return error(400, "invalid_label", f"app '{app.name}', {stage.name}: {exc}")
        lessons.append(lesson)
    statuses = []
    for step, lesson in zip(steps, lessons, strict=True):
        learner = uid if step.stage.policy in LEARNING else None
        epoch = step.stage.app.policy_epoch
        try:
            statuses.append(
                await state.policies.record(app.name, epoch, learner, lesson.arms, feedback_id)
            )
        except (RedisError, OSError, TimeoutError) as exc:
            return _unconfirmed(exc, feedback_id, f" of {step.stage.name}")
    if STALE in statuses:
        return error(
            409,
            "policy_changed",
            f"the pipeline of app '{app.name}' was changed or reset while this feedback was "
            "in flight: what was not yet stored was not learned; send it again (with the "
            "same feedback_id) if it still applies",
        )
    return Reply(200, orjson.dumps(_pipeline_answer(qid, steps, lessons, statuses)))


def _pipeline_answer(
    qid: int, steps: list[Step], lessons: list[Lesson], statuses: list[int]
) -> dict[str, object]:
    losses: dict[str, float] = {}
    per_stage = []
    silent = []
    for number, (step, lesson) in enumerate(zip(steps, lessons, strict=True), 1):
        losses.update(lesson.losses)
        silent.extend(step.silent)
        per_stage.append(
            {
                "stage": number,
                "policy": step.stage.policy,
                "models": [arm_label(arm) for arm, _ in step.said],
                "losses": lesson.losses,
            }
        )
    answer: dict[str, object] = {
        "query_id": qid,
        "models": [arm_label(arm) for step in steps for arm, _ in step.said],
        "losses": losses,
        "stages": per_stage,
    }
    if silent:
        answer["missing"] = silent
    if all(status == DUPLICATE for status in statuses):
        answer["duplicate"] = True
    return answer
