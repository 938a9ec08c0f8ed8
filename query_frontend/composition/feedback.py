"""``/update`` on a pipeline app: what each stage is taught by one labelled input.

The input goes through the pipeline as a query would (each stage's policy picks its
arm(s); an exp4 stage combines its arms' answers), and the label is compared with the
*pipeline's* answer: a stage is judged by what the app answers, not by its own output,
which no label describes. Every stage records its arms' losses (a split stage's A/B
test counts them); exp3 and exp4 stages also move their weights:

* a stage where one arm answered (single, split, exp3): that arm's loss is the loss of
  the pipeline's answer (exp3 weighs it by the chance the arm had, as for an app);
* an exp4 stage before the last: each of its arms is scored by running the stages after
  it on that arm's answer alone, so each arm is judged by the answer it would have led
  to (an arm whose way through the later stages finds no answer is left out);
* the last stage: each arm's own answer against the label, exactly as for an app.

So an update costs one pass through the pipeline plus, for each exp4 stage before the
last, one pass through the later stages per arm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from management_frontend.state.policy import EXP4
from query_frontend.composition.run import Pipeline, StageOutputError
from query_frontend.queries import Expired, Failure, Item, Outcome, RequestTrace
from query_frontend.routing.table import Arm, Route
from query_frontend.selection.ask import answer, arm_label, ask, learned_view
from query_frontend.selection.choose import ensemble_weights
from query_frontend.selection.feedback import Answered


class StageUnansweredError(Exception):
    """A stage gave no answer to learn from: its model failed (``failed``), or none of
    its arms answered in time or could (then sending the feedback again may work)."""

    def __init__(self, message: str, failed: bool) -> None:
        super().__init__(message)
        self.failed = failed


@dataclass(slots=True)
class Step:
    """One stage's part in the pass: who answered, and what they are judged by."""

    stage: Route
    probability: float  # the chance its one arm had (split, exp3); 1 otherwise
    said: list[tuple[Arm, bytes]]  # the arms that answered, and their outputs
    silent: list[str]  # the arms asked that did not answer
    weights: dict[str, float]  # exp4: each answering arm's weight in the combined answer
    judged: list[Answered]  # each answering arm and the pipeline answer it is judged by


async def walk(
    pipeline: Pipeline,
    stages: Sequence[Route],
    item: Item,
    qid: int,
    deadline: float,
    uid: str | None,
    trace: RequestTrace | None,
) -> list[Step]:
    """Run one input through every stage and say what each stage's arms are judged by.
    Raises ``StageUnansweredError`` and ``StageOutputError`` (nothing is learned then), and
    what ``selection.ask`` raises."""
    steps: list[Step] = []
    current = item
    for k, stage in enumerate(stages):
        step, output = await _step(pipeline, stage, current, qid, deadline, uid, trace)
        steps.append(step)
        if k + 1 < len(stages):
            models = [arm_label(arm) for arm, _ in step.said]
            current = pipeline.next_input(stage, stages[k + 1], output, models)
    final = orjson.loads(output)
    last = len(stages) - 1
    for k, step in enumerate(steps):
        if k == last:
            step.judged = [_answered(arm, orjson.loads(o)) for arm, o in step.said]
        elif len(step.said) == 1:
            step.judged = [_answered(step.said[0][0], final)]
        else:  # an ensemble before the last stage: each arm by the answer it leads to
            for arm, o in step.said:
                value = await _downstream(pipeline, stages[k:], o, qid, deadline, uid, trace)
                if value is not None:
                    step.judged.append(_answered(arm, value))
    return steps


async def _step(
    pipeline: Pipeline,
    stage: Route,
    item: Item,
    qid: int,
    deadline: float,
    uid: str | None,
    trace: RequestTrace | None,
) -> tuple[Step, bytes]:
    """One stage's answer to the input, and who gave it."""
    if stage.model_key is None and stage.no_model_reason:
        raise StageUnansweredError(f"{stage.name}: {stage.no_model_reason}", failed=False)
    view = learned_view(pipeline.policies, stage, uid)
    (asked,) = await ask(
        pipeline.evaluator, pipeline.rng, stage, [item], [qid], deadline, uid, view, trace
    )
    ans = answer(stage, asked, view, {})
    said = [(arm, o) for arm, o in asked.outcomes if isinstance(o, bytes)]
    silent = [arm_label(arm) for arm, o in asked.outcomes if not isinstance(o, bytes)]
    if not isinstance(ans.outcome, bytes):
        raise _unanswered(stage, ans.outcome)
    weights: dict[str, float] = {}
    if stage.policy == EXP4:
        arms = [a for a, _ in said]
        weights = dict(
            zip([a.name for a in arms], ensemble_weights(stage, arms, view), strict=True)
        )
    step = Step(stage, asked.choice.probability, said, silent, weights, [])
    return step, ans.outcome


def _unanswered(stage: Route, outcome: Outcome) -> StageUnansweredError:
    if isinstance(outcome, Failure):
        return StageUnansweredError(f"{stage.name}: {outcome.message}", failed=True)
    reason = outcome.reason if isinstance(outcome, Expired) else "no answer"
    return StageUnansweredError(f"{stage.name}: {reason}", failed=False)


async def _downstream(
    pipeline: Pipeline,
    stages: Sequence[Route],
    output: bytes,
    qid: int,
    deadline: float,
    uid: str | None,
    trace: RequestTrace | None,
) -> Any:
    """The pipeline's answer had ``stages[0]`` answered ``output``; ``None`` if the later
    stages give none (or cannot take it)."""
    try:
        item = pipeline.to_input(output, stages[1].app.input_type)
    except ValueError:
        return None
    try:
        (ans,) = await pipeline.run(stages[1:], [item], [qid], deadline, uid, trace)
    except StageOutputError:  # a later stage's output the one after it cannot take
        return None
    return orjson.loads(ans.outcome) if isinstance(ans.outcome, bytes) else None


def _answered(arm: Arm, value: Any) -> Answered:
    return Answered(arm.name, arm_label(arm), value)
