"""Answering the queries of an app with several arms (split, exp3, exp4).

For each input the selection policy picks the arm(s) (``choose``); inputs are grouped
by arm and each group goes through its model version's cache and queue at once
(``Evaluator.submit``), so a batch request still makes one batch per model. Each arm's
queries carry the app's deadline, so by then every arm has answered or given up: an
ensemble (exp4) combines what arrived and names the models that did not — straggler
mitigation, with no extra timer. An arm that cannot answer at all (no replica connected,
no version to route to) is not waited for.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

from management_frontend.state.policy import EXP4, LEARNING, PolicyState
from query_frontend.batching.dispatch import OverloadedError
from query_frontend.batching.evaluate import Evaluator
from query_frontend.batching.quarantine import QuarantinedError
from query_frontend.queries import Expired, Failure, Item, Outcome, RequestTrace
from query_frontend.routing.table import Arm, Route
from query_frontend.selection.choose import Choice, chooser, ensemble_weights, split_arms
from query_frontend.selection.ensemble import combine
from query_frontend.selection.learned import PolicyStates

_NOTHING_LEARNED = PolicyState()


@dataclass(slots=True)
class Asked:
    """One input: the arm(s) chosen for it and what each answered."""

    choice: Choice
    outcomes: list[tuple[Arm, Outcome]]


@dataclass(slots=True)
class Answer:
    """One input's answer: the output (or why there is none) and who gave it."""

    outcome: Outcome
    models: list[str]  # "model:version" of the arms whose answers made the output
    missing: list[tuple[str, str]]  # (model or arm, why) that an ensemble lacks


def learned_view(policies: PolicyStates, route: Route, uid: str | None) -> PolicyState:
    """What the route's policy learned, as ``uid`` sees it (nothing for those that do not
    learn)."""
    if route.params.policy in LEARNING:
        return policies.view(route.app.name, route.app.policy_epoch, uid)
    return _NOTHING_LEARNED


async def ask(
    evaluator: Evaluator,
    rng: random.Random,
    route: Route,
    items: list[Item],
    ids: list[int],
    deadline: float,
    uid: str | None,
    view: PolicyState,
    trace: RequestTrace | None = None,
    cutoff: float | None = None,
) -> list[Asked]:
    """Send each input to the arm(s) its policy picks; every outcome arrives by
    ``deadline``. Raises ``OverloadedError``/``TooManyInputsError`` when the one arm of
    split or exp3 cannot queue them; an ensemble counts such an arm as missing.

    ``cutoff`` (loop time, before ``deadline``; ensembles only): an input that has an
    answer from one of its arms by then is not kept waiting for the others, which count
    as missing (stragglers); an input with none waits on until ``deadline``. A pipeline
    gives it to an ensemble stage that later stages need time after."""
    routable, ready = split_arms(route, evaluator.has_replicas)
    choose = chooser(route, routable, ready, view, uid, rng)
    choices = [choose() for _ in items]
    groups: dict[Arm, list[int]] = {}
    for i, choice in enumerate(choices):
        for arm in choice.arms:
            groups.setdefault(arm, []).append(i)
    asked = [Asked(choice, []) for choice in choices]
    ensemble = route.params.policy == EXP4
    # Start every arm's work, then wait: each future resolves by the deadline. A request
    # that fails here leaves started queries to end at their deadline, unawaited.
    pending: list[tuple[Arm, list[int], Sequence[bytes | Expired | asyncio.Future[Outcome]]]] = []
    for arm, indices in groups.items():
        assert arm.key is not None  # split_arms keeps routable arms only
        waits: Sequence[bytes | Expired | asyncio.Future[Outcome]]
        try:
            waits = evaluator.submit(
                arm.key,
                route.app,
                [items[i] for i in indices],
                [ids[i] for i in indices],
                deadline,
                impatient=ensemble,
                trace=trace,
            )
        except OverloadedError as exc:
            if not ensemble:
                raise
            waits = [Expired(f"{arm_label(arm)} is overloaded: {exc}")] * len(indices)
        except QuarantinedError as exc:
            if not ensemble:
                raise
            waits = [Expired(f"{arm_label(arm)}: {exc}")] * len(indices)
        pending.append((arm, indices, waits))
    enough: set[int] = set()  # inputs that need not wait past the cutoff
    if cutoff is not None and ensemble:
        enough = await _until(cutoff, pending)
    for arm, indices, arm_waits in pending:
        for i, wait in zip(indices, arm_waits, strict=True):
            if isinstance(wait, bytes | Expired):
                outcome: Outcome = wait
            elif wait.done() or i not in enough:
                outcome = await wait
            else:
                outcome = Expired(f"{arm_label(arm)} had not answered when the others had")
            asked[i].outcomes.append((arm, outcome))
    return asked


async def _until(
    cutoff: float,
    pending: Sequence[tuple[Arm, list[int], Sequence[bytes | Expired | asyncio.Future[Outcome]]]],
) -> set[int]:
    """Wait until every arm answered or ``cutoff``; the inputs that by then have an
    answer (output) from at least one arm."""
    futures = [w for _, _, waits in pending for w in waits if isinstance(w, asyncio.Future)]
    loop = asyncio.get_running_loop()
    if futures and cutoff > loop.time():
        await asyncio.wait(futures, timeout=cutoff - loop.time())
    return {
        i
        for _, indices, waits in pending
        for i, w in zip(indices, waits, strict=True)
        if isinstance(w, bytes)
        or (isinstance(w, asyncio.Future) and w.done() and isinstance(w.result(), bytes))
    }


def arm_label(arm: Arm) -> str:
    return arm.label or arm.name


def answers(route: Route, asked: Sequence[Asked], view: PolicyState) -> list[Answer]:
    """The answer to each input from what its arm(s) said."""
    weights: dict[tuple[str, ...], list[float]] = {}  # exp4: by the arms that answered
    return [answer(route, a, view, weights) for a in asked]


def answer(
    route: Route, asked: Asked, view: PolicyState, weights: dict[tuple[str, ...], list[float]]
) -> Answer:
    """The answer to one input from what its arm(s) said; ``weights`` keeps the exp4
    weights of each set of arms that answered, for the other inputs of the request."""
    if route.params.policy != EXP4:
        arm, outcome = asked.outcomes[0]
        return Answer(outcome, [arm_label(arm)] if isinstance(outcome, bytes) else [], [])
    answered = [(arm, o) for arm, o in asked.outcomes if isinstance(o, bytes)]
    expose = route.app.expose_model_errors
    missing = [
        (arm_label(arm), _why(o, expose)) for arm, o in asked.outcomes if not isinstance(o, bytes)
    ]
    asked_names = {arm.name for arm, _ in asked.outcomes}
    for arm in route.arms:
        if arm.name not in asked_names:
            missing.append(
                (arm_label(arm), arm.reason or f"no replica of {arm_label(arm)} is connected")
            )
    if not answered:
        failures = [o for _, o in asked.outcomes if isinstance(o, Failure)]
        if failures and len(failures) == len(asked.outcomes):
            return Answer(failures[0], [], missing)
        return Answer(Expired("; ".join(f"{m}: {why}" for m, why in missing)), [], missing)
    names = tuple(arm.name for arm, _ in answered)  # what the weights depend on
    mix = weights.get(names)
    if mix is None:
        mix = weights[names] = ensemble_weights(route, [arm for arm, _ in answered], view)
    outputs = [o for _, o in answered]
    try:
        output = combine(outputs, mix, route.params.loss)
    except (TypeError, ValueError, RecursionError):  # answers too odd to weigh (too deep)
        output = outputs[max(range(len(outputs)), key=mix.__getitem__)]
    return Answer(output, [arm_label(arm) for arm, _ in answered], missing)


def _why(outcome: Outcome, expose: bool) -> str:
    if isinstance(outcome, Failure):
        return f"the model failed: {outcome.told(expose)}"
    if isinstance(outcome, Expired):
        return outcome.reason
    return ""
