"""An app's pipeline as the admin client takes it, checks it and shows it.

``Connection.set_app_pipeline(app, stages)`` takes each stage in whichever of these
shapes reads best where it is written:

    "feat"                                   one model (its current version), policy single
    "clf:2"                                  one version, pinned
    ["feat"]                                 a list of one arm: the same
    {"arms": ["a", "b"], "policy": "exp4", "policy_params": {"eta": 0.2}}
    {"arms": ["a", "b"], "policy": "exp4", "eta": 0.2}          params given flat
    Stage(["a:1", "a:2"], policy="split", weights={"a:1": 90, "a:2": 10})

``stages_json`` turns them into the body of ``PUT /admin/apps/{app}/pipeline``,
refusing here, before any request, what the management frontend would refuse for its
shape alone (an empty pipeline, more than ``MAX_STAGES`` stages, a stage without arms,
a name that breaks the naming rules, several arms with no policy to choose between
them, settings the policy does not take). What needs the cluster's records (models
that exist, input and output types that fit) is the management frontend's to check.
Stages are numbered from 1 in every message, as everywhere a person reads them.

``describe`` shows a pipeline on one line, in the CLI's stage syntax:
``feat -> a,b@exp4 -> clf:2``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from admin.exceptions import InvalidRequestError
from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue
from management_frontend.state.pipelines import MAX_STAGES, stage_name
from management_frontend.state.policy import PolicyParams

__all__ = ["MAX_STAGES", "Stage", "check_stage_number", "describe", "stages_json"]

# A stage's keys in the API's JSON; any other key of a dict stage is a policy setting,
# but for the epoch that get_app_pipeline shows (the cluster sets it), ignored.
_STAGE_KEYS: Final = ("arms", "policy", "policy_params")
_SHOWN_ONLY: Final = ("policy_epoch",)

_SHAPES: Final = (
    "a model name ('feat'), a pinned version ('clf:2'), a list of them, a dict "
    '{"arms": [...], "policy": ..., "policy_params": {...}}, or admin.Stage(arms, '
    "policy=..., **params)"
)


class Stage:
    """One stage of a pipeline: its arms and the selection policy that picks among them.

    ``arms``: one arm (``"model"``, following its current version, or
    ``"model:version"``, pinned) or a list of them. ``policy``: "single" (the default,
    for one arm), "split", "exp3" or "exp4", with its settings as keyword arguments
    (``weights={"a:1": 90, "a:2": 10}``, ``eta=0.2``, ``gamma=0.1``, ``loss="squared"``),
    exactly those of ``Connection.set_selection_policy``::

        conn.set_app_pipeline("reviews", ["embed", Stage(["clf:1", "clf:2"],
                              policy="split", weights={"clf:1": 90, "clf:2": 10})])
    """

    __slots__ = ("arms", "params", "policy")

    def __init__(self, arms: str | Sequence[str], policy: str = "single", **params: Any) -> None:
        # Anything else is kept as given, for stages_json to refuse with a message.
        self.arms: tuple[str, ...] = tuple(arms) if isinstance(arms, list | tuple) else (arms,)  # type: ignore[assignment]
        self.policy = policy
        self.params: dict[str, Any] = dict(params)

    def __repr__(self) -> str:
        settings = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"Stage({list(self.arms)!r}, policy={self.policy!r}{settings})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Stage):
            return NotImplemented
        return (self.arms, self.policy, self.params) == (other.arms, other.policy, other.params)

    __hash__ = None  # type: ignore[assignment]  # it holds a dict: not hashable

    def to_json(self) -> dict[str, Any]:
        """The stage as the admin API takes it (not yet checked: ``stages_json`` does)."""
        return {"arms": list(self.arms), "policy": self.policy, "policy_params": dict(self.params)}


def stages_json(stages: object) -> list[dict[str, Any]]:
    """The stages, in any of the shapes above, as the API's list of
    ``{"arms", "policy", "policy_params"}``; ``InvalidRequestError`` names the stage
    (from 1) and says what to pass instead."""
    if isinstance(stages, str | bytes | Mapping | Stage) or not isinstance(stages, Sequence):
        raise InvalidRequestError(
            f"stages must be a list with one entry per stage, in order (each {_SHAPES}), "
            f"got {stages!r}; a one-model app is ['m']",
            code="invalid",
        )
    if not stages:
        raise InvalidRequestError(
            "a pipeline needs at least one stage: pass e.g. ['feat', 'clf']", code="invalid"
        )
    if len(stages) > MAX_STAGES:
        raise InvalidRequestError(
            f"a pipeline has at most {MAX_STAGES} stages, got {len(stages)}", code="invalid"
        )
    return [_stage_json(number, stage) for number, stage in enumerate(stages, start=1)]


def _stage_json(number: int, stage: object) -> dict[str, Any]:
    """One stage, checked; ``number`` counts from 1."""
    if isinstance(stage, Stage):
        raw = stage.to_json()
    elif isinstance(stage, str):
        raw = {"arms": [stage]}
    elif isinstance(stage, Sequence) and not isinstance(stage, bytes):
        raw = {"arms": list(stage)}
    elif isinstance(stage, Mapping):
        raw = _flat_params(number, stage)
    else:
        raise _invalid(number, f"is {stage!r}: pass {_SHAPES}")
    arms = raw.get("arms")
    if isinstance(arms, str):
        arms = [arms]
    if not isinstance(arms, Sequence) or isinstance(arms, bytes):
        raise _invalid(number, f"has arms {arms!r}: pass a list of 'model' or 'model:version'")
    if not arms:
        raise _invalid(number, "has no arms: name at least one model ('m' or 'm:version')")
    checked_arms: list[str] = []
    for arm in arms:
        try:
            checked_arms.append(rules.check_arm(arm))
        except InvalidValue as exc:
            raise InvalidRequestError(f"stage {number}: {exc.message}", code="invalid") from None
    duplicates = sorted({a for a in checked_arms if checked_arms.count(a) > 1})
    if duplicates:
        raise _invalid(
            number, f"names {', '.join(map(repr, duplicates))} twice: name each arm once"
        )
    where = stage_name(number - 1, checked_arms)
    policy = raw.get("policy", rules.SINGLE)
    params = raw.get("policy_params") or {}
    if not isinstance(params, Mapping):
        raise InvalidRequestError(
            f"{where}: policy_params must be a dict of settings, got {params!r}", code="invalid"
        )
    try:
        policy = rules.policy(policy)
        params = rules.json_object(dict(params), "policy_params")
        PolicyParams.parse(policy, params)
    except InvalidValue as exc:
        raise InvalidRequestError(f"{where}: {exc.message}", code="invalid") from None
    if policy == rules.SINGLE and len(checked_arms) > 1:
        raise InvalidRequestError(
            f"{where} has {len(checked_arms)} arms but the policy 'single', which answers "
            "with one: give it a policy that chooses among them, e.g. "
            f'{{"arms": {checked_arms!r}, "policy": "exp4"}} or Stage({checked_arms!r}, '
            "policy='split', weights={...}); or keep one arm",
            code="invalid",
        )
    return {"arms": checked_arms, "policy": policy, "policy_params": dict(params)}


def _flat_params(number: int, stage: Mapping[Any, Any]) -> dict[str, Any]:
    """A dict stage with its settings in ``policy_params``, or given flat beside it."""
    if "arms" not in stage:
        raise _invalid(number, f"has no 'arms' ({dict(stage)!r}): pass {_SHAPES}")
    flat = {k: v for k, v in stage.items() if k not in _STAGE_KEYS + _SHOWN_ONLY}
    nested = stage.get("policy_params") or {}
    if not isinstance(nested, Mapping):
        raise _invalid(number, f"has policy_params {nested!r}: pass a dict of settings")
    both = sorted(str(k) for k in set(flat) & set(nested))
    if both:
        raise _invalid(
            number,
            f"gives {', '.join(map(repr, both))} both flat and in policy_params: give each once",
        )
    raw = {k: stage[k] for k in _STAGE_KEYS if k in stage}
    raw["policy_params"] = {**nested, **flat}
    return raw


def check_stage_number(stage: object) -> int:
    """A stage number as the API takes it: from 1 (the app's links) to ``MAX_STAGES``."""
    if isinstance(stage, bool) or not isinstance(stage, int) or not 1 <= stage <= MAX_STAGES:
        raise InvalidRequestError(
            f"stage must be a stage's number, from 1 (the first, the app's links) to "
            f"{MAX_STAGES}, got {stage!r}",
            code="invalid",
        )
    return stage


def describe(stages: Sequence[Mapping[str, Any]]) -> str:
    """A pipeline on one line: ``feat -> a,b@exp4 -> clf:2`` (a stage without arms
    shows as ``-``)."""
    shown = []
    for stage in stages:
        arms = ",".join(str(a) for a in stage.get("arms") or ()) or "-"
        policy = stage.get("policy") or rules.SINGLE
        shown.append(arms if policy == rules.SINGLE else f"{arms}@{policy}")
    return " -> ".join(shown)


def _invalid(number: int, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"stage {number} {problem}", code="invalid")
