"""Selection policies: their parameters, and the learned state kept in Redis.

An app's *arms* are its links: ``"model"`` (whatever version is current) or
``"model:version"`` (that version, pinned). Its policy decides which arms answer a query:

    single   the one linked arm (the default)
    split    one arm per query, drawn by fixed weights; sticky per user id
    exp3     one arm per query, drawn by a bandit that learns from feedback
    exp4     every arm; the answers are combined by weights learned from feedback

This module is the schema's word on both: ``PolicyParams.parse`` validates and fills in
an app's ``policy_params``, and ``PolicyState`` is the record under
``{p}:app:{app}:policy`` with the arithmetic that turns it into probabilities. The query
frontend learns (``query_frontend.selection``); the management frontend reports
(``get_policy_state``). Neither needs the other for it.

The state is *additive*: each feedback adds to an arm's log-weight, update count and
loss sum with HINCRBYFLOAT/HINCRBY, so several query frontends learn into the same
record without a lock and without losing each other's updates. A user's record
(``...:policy:user:{uid}``) holds only what that user's feedback added; the user's view
is the app's record plus their own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, cast

import redis.asyncio as aioredis

from management_frontend.errors import Invalid
from management_frontend.schema import Keys, parse_arm

SINGLE: Final = "single"
SPLIT: Final = "split"
EXP3: Final = "exp3"
EXP4: Final = "exp4"
POLICIES: Final = (SINGLE, SPLIT, EXP3, EXP4)
# Policies that may have several arms; "single" has at most one link.
MULTI_ARM: Final = (SPLIT, EXP3, EXP4)
# "auto": labels and outputs that hold a non-integer number are compared by squared
# error (and combined by a weighted mean), anything else by 0/1 loss (and a weighted vote).
LOSSES: Final = ("auto", "zero_one", "squared", "absolute")

DEFAULT_ETA: Final = 0.1
DEFAULT_GAMMA: Final = 0.1
MAX_ETA: Final = 10.0
MAX_USER_ID_LENGTH: Final = 256

_ALLOWED: Final[dict[str, tuple[str, ...]]] = {
    SINGLE: ("loss",),
    SPLIT: ("weights", "loss"),
    EXP3: ("eta", "gamma", "loss"),
    EXP4: ("eta", "loss"),
}


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Invalid(f"{what} must be a number, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise Invalid(f"{what} must be a finite number, got {value!r}")
    return number


def check_arm(value: object) -> str:
    """An arm name: ``model`` or ``model:version``, each part valid on its own."""
    from management_frontend import validation  # validation imports this module's names

    if not isinstance(value, str):
        raise Invalid(f"an arm must be a string 'model' or 'model:version', got {value!r}")
    model, version = parse_arm(value)
    validation.model_name(model)
    if version is not None:
        validation.version(version)
    return value


def check_user_id(value: object) -> str:
    """A user id as queries and feedback carry it ("uid"): a string, or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise Invalid(f'"uid" must be a non-empty string (or an integer), got {value!r}')
    if len(value) > MAX_USER_ID_LENGTH:
        raise Invalid(f'"uid" has {len(value)} characters: use at most {MAX_USER_ID_LENGTH}')
    return value


@dataclass(frozen=True)
class PolicyParams:
    """An app's policy settings, validated, with defaults filled in."""

    policy: str = SINGLE
    # split: arm -> relative weight; None sends equal shares to every linked arm.
    weights: dict[str, float] | None = None
    eta: float = DEFAULT_ETA  # exp3, exp4: learning rate
    gamma: float = DEFAULT_GAMMA  # exp3: share of queries spread evenly to keep exploring
    loss: str = "auto"

    @classmethod
    def parse(cls, policy: str, raw: Mapping[str, Any]) -> PolicyParams:
        """Validate ``raw`` for ``policy``; ``Invalid`` says which setting and why."""
        if policy not in POLICIES:
            raise Invalid(f"policy {policy!r} is not known: use one of {', '.join(POLICIES)}")
        if not isinstance(raw, Mapping):
            raise Invalid(f"policy parameters must be an object, got {raw!r}")
        allowed = _ALLOWED[policy]
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise Invalid(
                f"policy {policy!r} takes no parameter {', '.join(map(repr, unknown))}: "
                f"it takes {', '.join(map(repr, allowed))}"
            )
        params = cls(policy=policy)
        if "loss" in raw:
            loss = raw["loss"]
            if loss not in LOSSES:
                raise Invalid(f"loss {loss!r} is not known: use one of {', '.join(LOSSES)}")
            params = _replace(params, loss=loss)
        if "eta" in raw:
            eta = _number(raw["eta"], "eta")
            if not 0 < eta <= MAX_ETA:
                raise Invalid(f"eta must be > 0 and <= {MAX_ETA:g} (the learning rate), got {eta}")
            params = _replace(params, eta=eta)
        if "gamma" in raw:
            gamma = _number(raw["gamma"], "gamma")
            if not 0 < gamma <= 1:
                raise Invalid(
                    f"gamma must be > 0 and <= 1 (the share of queries that explore), got {gamma}"
                )
            params = _replace(params, gamma=gamma)
        if "weights" in raw and raw["weights"] is not None:
            params = _replace(params, weights=_weights(raw["weights"]))
        return params

    def to_json(self) -> dict[str, Any]:
        """The settings that apply to this policy (what ``App.policy_params`` stores)."""
        values: dict[str, Any] = {
            "weights": self.weights,
            "eta": self.eta,
            "gamma": self.gamma,
            "loss": self.loss,
        }
        return {k: values[k] for k in _ALLOWED[self.policy]}


def _replace(params: PolicyParams, **changes: Any) -> PolicyParams:
    values = {**params.__dict__, **changes}
    return PolicyParams(**values)


def _weights(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise Invalid(
            'weights must be a non-empty object of arm -> weight, e.g. {"m:1": 90, "m:2": 10}'
        )
    weights: dict[str, float] = {}
    for arm, value in raw.items():
        check_arm(arm)
        weight = _number(value, f"the weight of {arm!r}")
        if weight < 0:
            raise Invalid(f"the weight of {arm!r} must be >= 0, got {weight:g}")
        weights[arm] = weight
    if not any(weights.values()):
        raise Invalid("weights must give at least one arm a weight > 0")
    return weights


# ---------------------------------------------------------------------- learned state


@dataclass
class ArmState:
    log_weight: float = 0.0
    updates: int = 0
    loss_sum: float = 0.0  # raw losses, as the loss function measured them

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.updates if self.updates else None


@dataclass
class PolicyState:
    """One record of learned state: the app's, a user's part, or the two combined."""

    arms: dict[str, ArmState] = field(default_factory=dict)
    updates: int = 0  # feedback messages recorded

    @classmethod
    def from_hash(cls, h: Mapping[str, str]) -> PolicyState:
        """Fields: ``updates``, and per arm ``w:{arm}``, ``n:{arm}``, ``l:{arm}``."""
        state = cls(updates=int(h.get("updates", "0")))
        for name, value in h.items():
            kind, sep, arm = name.partition(":")
            if not sep:
                continue
            entry = state.arms.setdefault(arm, ArmState())
            if kind == "w":
                entry.log_weight = float(value)
            elif kind == "n":
                entry.updates = int(value)
            elif kind == "l":
                entry.loss_sum = float(value)
        return state

    def plus(self, other: PolicyState) -> PolicyState:
        """This record with ``other`` added: the app's state plus a user's part."""
        out = PolicyState(updates=self.updates + other.updates)
        for arm in self.arms.keys() | other.arms.keys():
            a, b = self.arms.get(arm, ArmState()), other.arms.get(arm, ArmState())
            out.arms[arm] = ArmState(
                a.log_weight + b.log_weight, a.updates + b.updates, a.loss_sum + b.loss_sum
            )
        return out

    def loss_scale(self) -> float:
        """The mean loss per arm update: what "a typical loss" is, to make losses unitless."""
        n = sum(a.updates for a in self.arms.values())
        total = sum(a.loss_sum for a in self.arms.values())
        return total / n if n and total > 0 else 1.0

    def log_weights(self, arms: Sequence[str]) -> list[float]:
        """Log-weights of ``arms``; an arm without state starts level with the best one,
        so a newly linked model is tried rather than starved."""
        known = [self.arms[a].log_weight for a in arms if a in self.arms]
        start = max(known) if known else 0.0
        return [self.arms[a].log_weight if a in self.arms else start for a in arms]

    def probabilities(self, params: PolicyParams, arms: Sequence[str]) -> list[float]:
        """For split and exp3, the chance each arm answers a query; for exp4, each arm's
        weight in the combined answer; for single, 1 for the arm."""
        if not arms:
            return []
        if params.policy == SPLIT:
            return split_shares(params.weights, arms)
        if params.policy in (EXP3, EXP4):
            shares = softmax(self.log_weights(arms))
            if params.policy == EXP3:
                k = len(arms)
                return [(1 - params.gamma) * p + params.gamma / k for p in shares]
            return shares
        return [1.0] + [0.0] * (len(arms) - 1)

    def to_json(self, params: PolicyParams, arms: Sequence[str]) -> dict[str, Any]:
        probs = self.probabilities(params, arms)
        weights = self.log_weights(arms)
        out: dict[str, Any] = {}
        for arm, p, w in zip(arms, probs, weights, strict=True):
            entry = self.arms.get(arm, ArmState())
            out[arm] = {
                "probability": p,
                "log_weight": w,
                "updates": entry.updates,
                "mean_loss": entry.mean_loss,
            }
        for arm in sorted(self.arms.keys() - set(arms)):  # learned, then unlinked
            entry = self.arms[arm]
            out[arm] = {
                "probability": 0.0,
                "log_weight": entry.log_weight,
                "updates": entry.updates,
                "mean_loss": entry.mean_loss,
                "linked": False,
            }
        return {"updates": self.updates, "arms": out}


def softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    exps = [math.exp(v - top) for v in values]
    total = sum(exps)
    return [e / total for e in exps]


def split_shares(weights: Mapping[str, float] | None, arms: Sequence[str]) -> list[float]:
    """Traffic shares of ``arms`` under split weights: equal without weights; an arm the
    weights do not name gets none (equal shares again if that leaves nothing)."""
    raw = [weights.get(a, 0.0) for a in arms] if weights else [1.0] * len(arms)
    total = sum(raw)
    if total <= 0:
        raw, total = [1.0] * len(arms), float(len(arms))
    return [w / total for w in raw]


@dataclass(frozen=True)
class ArmFeedback:
    """What one feedback message adds to one arm."""

    log_weight: float  # added to the arm's log-weight (<= 0 for a loss in exp3)
    loss: float  # the raw loss, counted in the arm's mean


async def read_policy_state(
    r: aioredis.Redis, keys: Keys, app: str, uid: str | None = None
) -> PolicyState:
    """The app's state, or what a user sees: the app's plus the user's own part."""
    base = await read_app_part(r, keys, app)
    if uid is None:
        return base
    return base.plus(await read_user_part(r, keys, app, uid))


async def read_app_part(r: aioredis.Redis, keys: Keys, app: str) -> PolicyState:
    return PolicyState.from_hash(_text_hash(await r.hgetall(keys.policy_state(app))))


async def read_user_part(r: aioredis.Redis, keys: Keys, app: str, uid: str) -> PolicyState:
    return PolicyState.from_hash(_text_hash(await r.hgetall(keys.policy_state(app, uid))))


async def record_feedback(
    r: aioredis.Redis,
    keys: Keys,
    app: str,
    uid: str | None,
    feedback: Mapping[str, ArmFeedback],
) -> None:
    """Add one feedback message to the app's state and, with ``uid``, to the user's part.

    One round trip; the increments are atomic and commute, so concurrent query
    frontends never overwrite each other.
    """
    targets = [keys.policy_state(app)]
    if uid is not None:
        targets.append(keys.policy_state(app, uid))
    async with r.pipeline(transaction=True) as pipe:
        for key in targets:
            pipe.hincrby(key, "updates", 1)
            for arm, fb in feedback.items():
                if fb.log_weight:
                    pipe.hincrbyfloat(key, f"w:{arm}", fb.log_weight)
                pipe.hincrby(key, f"n:{arm}", 1)
                pipe.hincrbyfloat(key, f"l:{arm}", fb.loss)
        if uid is not None:
            pipe.sadd(keys.policy_users(app), uid)
        await pipe.execute()


async def policy_state_keys(r: aioredis.Redis | Any, keys: Keys, app: str) -> list[str]:
    """Every key holding what ``app`` learned: its record, its users' parts, their index.

    ``r`` may be a pipeline in WATCH mode (a store transaction deleting them); watch
    ``keys.policy_users(app)`` first so that a user added meanwhile aborts it.
    """
    users = [_text(u) for u in await r.smembers(keys.policy_users(app))]
    return [
        keys.policy_state(app),
        keys.policy_users(app),
        *(keys.policy_state(app, u) for u in sorted(users)),
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _text_hash(h: Mapping[Any, Any]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in cast(Mapping[bytes | str, bytes | str], h).items()}
