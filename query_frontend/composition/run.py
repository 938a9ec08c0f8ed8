"""Answering a pipeline app's inputs, stage after stage, within the app's deadline.

Every stage's queries carry the app's deadline: a stage gets whatever time the stages
before it left. An input whose stage answers with a default (late, no replica) leaves
the pipeline there, and its answer is the app's default with an explanation naming the
stage; a model failing is the request's error, naming the stage; an output the next
stage cannot take as input is the request's error too (``StageOutputError``), naming
both stages, the model and what it returned. The inputs of a request go through each
stage together: one batch per model per stage, as an app's inputs do.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from time import perf_counter

from management_frontend.state.policy import EXP4
from model_container.protocol import InputType
from query_frontend.batching.dispatch import OverloadedError, TooManyInputsError
from query_frontend.batching.evaluate import Evaluator
from query_frontend.batching.quarantine import QuarantinedError
from query_frontend.queries import Expired, Failure, Item, Outcome, RequestTrace
from query_frontend.routing.table import Route
from query_frontend.selection.ask import Answer, answers, ask, learned_view
from query_frontend.selection.learned import PolicyStates

#: Turns one output (its JSON text) into an input of the given type; raises ``ValueError``
#: saying why it cannot (the HTTP layer's parsing of a client's ``"input"``).
ToInput = Callable[[bytes, InputType], Item]

#: What a stage may refuse a request's inputs with (a queue full, more inputs than a
#: queue holds, an input quarantined): the request is refused, its message naming the stage.
REFUSALS = (OverloadedError, TooManyInputsError, QuarantinedError)

#: How much of an output an error message shows.
SHOWN_OUTPUT_CHARS = 120


class StageOutputError(Exception):
    """A stage answered with an output the next stage cannot take as its input."""

    def __init__(self, message: str, stage: Route) -> None:
        super().__init__(message)
        self.stage = stage  # the stage whose output was refused


@dataclass(slots=True)
class StageStats:
    """What one stage did for one request: for the per-stage metrics."""

    seconds: float = 0.0
    defaults: int = 0
    errors: int = 0


@dataclass(slots=True)
class Pipeline:
    """What running a pipeline needs: how to reach models, choose among arms, read what
    the policies learned, and turn an output into the next stage's input."""

    evaluator: Evaluator
    rng: random.Random
    policies: PolicyStates
    to_input: ToInput

    async def run(
        self,
        stages: Sequence[Route],
        items: list[Item],
        ids: list[int],
        deadline: float,
        uid: str | None,
        trace: RequestTrace | None = None,
        stats_out: list[StageStats] | None = None,
    ) -> list[Answer]:
        """Each input's answer after every stage of ``stages`` (a pipeline's stages, or
        the last of them); ``stats_out``, if given, gets what each stage did. Raises what
        ``selection.ask`` raises (a stage's queue full: ``OverloadedError``...) and
        ``StageOutputError``."""
        final: list[Answer | None] = [None] * len(items)
        models: list[list[str]] = [[] for _ in items]
        missing: list[list[tuple[str, str]]] = [[] for _ in items]
        live = list(range(len(items)))
        current = items
        last = len(stages) - 1
        for k, stage in enumerate(stages):
            stats = StageStats()
            if stats_out is not None:
                stats_out.append(stats)
            if k and asyncio.get_running_loop().time() >= deadline:
                # Not late itself: the stages before it took the whole objective.
                why = f"{stage.name}: no time was left after {stages[k - 1].name}"
                for i in live:
                    final[i] = Answer(Expired(why), [], missing[i])
                stats.defaults += len(live)
                break
            started = perf_counter()
            # An ensemble that later stages need time after combines what its arms said
            # by its share of the time left, not waiting on a straggler till the end.
            cutoff = None
            if k < last and stage.policy == EXP4:
                now = asyncio.get_running_loop().time()
                cutoff = now + (deadline - now) / (len(stages) - k)
            try:
                said = await self._stage(
                    stage, current, [ids[i] for i in live], deadline, uid, trace, cutoff
                )
            except REFUSALS as exc:  # the request's answer (429, 503, 422): name the stage
                stats.errors += len(live)
                raise type(exc)(f"{stage.name}: {exc}") from exc
            stats.seconds = perf_counter() - started
            following = stages[k + 1] if k < last else None
            next_live: list[int] = []
            next_items: list[Item] = []
            for i, ans in zip(live, said, strict=True):
                outcome = ans.outcome
                if ans.missing:
                    missing[i].extend((m, f"{stage.name}: {why}") for m, why in ans.missing)
                if isinstance(outcome, bytes):
                    models[i].extend(ans.models)
                    if following is None:
                        final[i] = Answer(outcome, models[i], missing[i])
                        continue
                    next_items.append(self.next_input(stage, following, outcome, ans.models))
                    next_live.append(i)
                elif isinstance(outcome, Expired):
                    stats.defaults += 1
                    final[i] = Answer(Expired(f"{stage.name}: {outcome.reason}"), [], missing[i])
                else:
                    stats.errors += 1
                    final[i] = Answer(_named(stage, outcome), [], missing[i])
            live, current = next_live, next_items
            if not live:
                break
        return [a if a is not None else Answer(Expired("no stage answered"), [], []) for a in final]

    async def _stage(
        self,
        stage: Route,
        items: list[Item],
        ids: list[int],
        deadline: float,
        uid: str | None,
        trace: RequestTrace | None,
        cutoff: float | None = None,
    ) -> list[Answer]:
        """Each input's answer from one stage, as an app of its arms would give it
        (``cutoff``: an ensemble's, ``selection.ask``)."""
        if stage.model_key is not None:
            waits = self.evaluator.submit(
                stage.model_key, stage.app, items, ids, deadline, trace=trace
            )
            label = [stage.arms[0].label]
            outcomes: list[Outcome] = [w if isinstance(w, bytes) else await w for w in waits]
            return [Answer(o, label if isinstance(o, bytes) else [], []) for o in outcomes]
        if stage.no_model_reason:
            return [Answer(Expired(stage.no_model_reason), [], []) for _ in items]
        view = learned_view(self.policies, stage, uid)
        asked = await ask(
            self.evaluator, self.rng, stage, items, ids, deadline, uid, view, trace, cutoff
        )
        return answers(stage, asked, view)

    def next_input(
        self, stage: Route, following: Route, output: bytes, models: Sequence[str]
    ) -> Item:
        """What ``models`` of ``stage`` answered, as an input of ``following``; else
        ``StageOutputError`` naming both stages, the model(s) and the output."""
        input_type = following.app.input_type
        try:
            return self.to_input(output, input_type)
        except ValueError as exc:
            who = " and ".join(repr(m) for m in models) or "its model"
            raise StageOutputError(
                f"{stage.name}: {who} returned {shown(output)}, which "
                f"{following.name}, of input type '{input_type}', cannot take as input: "
                f"{exc}",
                stage,
            ) from None


def shown(output: bytes) -> str:
    """An output for an error message: its JSON text, cut short."""
    text = output.decode("utf-8", "replace")
    if len(text) > SHOWN_OUTPUT_CHARS:
        text = text[:SHOWN_OUTPUT_CHARS] + "..."
    return text


def _named(stage: Route, outcome: Failure | Expired | bytes) -> Outcome:
    """A failure of a stage's model, its message naming the stage."""
    assert isinstance(outcome, Failure)
    detail = f"{stage.name}: {outcome.detail}" if outcome.detail else ""
    return Failure(f"{stage.name}: {outcome.message}", detail)
