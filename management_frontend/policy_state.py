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
(``...:policy:{epoch}:user:{uid}``) holds only what that user's feedback added; the
user's view is the app's record plus their own. The app record's ``policy_epoch`` names
the state in use: forgetting it (a reset, a new policy) is writing a new epoch, and the
old keys are deleted in the background (``delete_stale_state``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis.asyncio as aioredis

from management_frontend import validation
from management_frontend.errors import Invalid
from management_frontend.schema import Keys, text, text_hash

# The policy names, and the check of a user id, are validation.py's (a request names
# them); the query frontend finds them here with the rest of the policies.
SINGLE: Final = validation.SINGLE
SPLIT: Final = validation.SPLIT
EXP3: Final = validation.EXP3
EXP4: Final = validation.EXP4
POLICIES: Final = validation.POLICIES
check_user_id: Final = validation.check_user_id
# Policies that may have several arms; "single" has at most one link.
MULTI_ARM: Final = (SPLIT, EXP3, EXP4)
# Policies that learn from feedback: they choose (exp3) or combine (exp4) by what it taught.
LEARNING: Final = (EXP3, EXP4)
# "auto": labels and outputs that hold a non-integer number are compared by squared
# error (and combined by a weighted mean), anything else by 0/1 loss (and a weighted vote).
LOSSES: Final = ("auto", "zero_one", "squared", "absolute")

DEFAULT_ETA: Final = 0.1
DEFAULT_GAMMA: Final = 0.1
MAX_ETA: Final = 10.0

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
        settings: dict[str, Any] = {}
        if "loss" in raw:
            loss = raw["loss"]
            if loss not in LOSSES:
                raise Invalid(f"loss {loss!r} is not known: use one of {', '.join(LOSSES)}")
            settings["loss"] = loss
        if "eta" in raw:
            eta = _number(raw["eta"], "eta")
            if not 0 < eta <= MAX_ETA:
                raise Invalid(f"eta must be > 0 and <= {MAX_ETA:g} (the learning rate), got {eta}")
            settings["eta"] = eta
        if "gamma" in raw:
            gamma = _number(raw["gamma"], "gamma")
            if not 0 < gamma <= 1:
                raise Invalid(
                    f"gamma must be > 0 and <= 1 (the share of queries that explore), got {gamma}"
                )
            settings["gamma"] = gamma
        if "weights" in raw and raw["weights"] is not None:
            settings["weights"] = _weights(raw["weights"])
        return cls(policy=policy, **settings)

    def to_json(self) -> dict[str, Any]:
        """The settings that apply to this policy (what ``App.policy_params`` stores)."""
        values: dict[str, Any] = {
            "weights": self.weights,
            "eta": self.eta,
            "gamma": self.gamma,
            "loss": self.loss,
        }
        return {k: values[k] for k in _ALLOWED[self.policy]}


def _weights(raw: object) -> dict[str, float]:
    if not isinstance(raw, Mapping) or not raw:
        raise Invalid(
            'weights must be a non-empty object of arm -> weight, e.g. {"m:1": 90, "m:2": 10}'
        )
    weights: dict[str, float] = {}
    for arm, value in raw.items():
        validation.check_arm(arm)
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

    def loss_totals(self) -> tuple[float, int]:
        """The sum of every arm's losses and the arm updates they came from: what a
        typical loss is, to make losses unitless (``feedback.learn``)."""
        return (
            sum(a.loss_sum for a in self.arms.values()),
            sum(a.updates for a in self.arms.values()),
        )

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
        if params.policy in LEARNING:
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
    # The arm's log-weight before its first feedback: level with the best arm, as
    # ``log_weights`` shows it. Written only if the record has none yet.
    start: float = 0.0


# How long a feedback id is remembered, so a retry of the same feedback counts once.
FEEDBACK_ID_TTL_S: Final = 24 * 3600
# A user's part expires this long after their last feedback (users come and go).
USER_STATE_TTL_S: Final = 90 * 24 * 3600
# record_feedback's answers.
RECORDED: Final = 1
STALE: Final = 0  # the app is gone, or its policy changed or was reset meanwhile
DUPLICATE: Final = 2  # this feedback id was counted before

# One feedback message, all or nothing, and only into the epoch it was learned in.
# KEYS: app record, app state, user part ("" for none), seen-id key ("" for none)
# ARGV: epoch, uid flag ("1"/"0"), id TTL, user TTL, then per arm: name, start, dw, loss
_RECORD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'policy_epoch') or '') ~= ARGV[1] then return 0 end
if KEYS[4] ~= '' then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[3]) then return 2 end
end
local user = ARGV[2] == '1'
redis.call('HINCRBY', KEYS[2], 'updates', 1)
if user then redis.call('HINCRBY', KEYS[3], 'updates', 1) end
for i = 5, #ARGV, 4 do
  local w, n, l = 'w:' .. ARGV[i], 'n:' .. ARGV[i], 'l:' .. ARGV[i]
  redis.call('HSETNX', KEYS[2], w, ARGV[i + 1])
  if tonumber(ARGV[i + 2]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[2], w, ARGV[i + 2]) end
  redis.call('HINCRBY', KEYS[2], n, 1)
  redis.call('HINCRBYFLOAT', KEYS[2], l, ARGV[i + 3])
  if user then
    if tonumber(ARGV[i + 2]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[3], w, ARGV[i + 2]) end
    redis.call('HINCRBY', KEYS[3], n, 1)
    redis.call('HINCRBYFLOAT', KEYS[3], l, ARGV[i + 3])
  end
end
if user then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
return 1
"""


def new_epoch() -> str:
    """A fresh ``policy_epoch``: state learned under any other one is no longer read."""
    return secrets.token_hex(4)


async def read_part(
    r: aioredis.Redis, keys: Keys, app: str, epoch: str, uid: str | None = None
) -> PolicyState:
    """One record as stored: the app's state, or with ``uid`` that user's part."""
    return PolicyState.from_hash(text_hash(await r.hgetall(keys.policy_state(app, epoch, uid))))


async def read_policy_state(
    r: aioredis.Redis, keys: Keys, app: str, epoch: str, uid: str | None = None
) -> PolicyState:
    """The app's state, or what a user sees: the app's plus the user's own part."""
    base = await read_part(r, keys, app, epoch)
    if uid is None:
        return base
    return base.plus(await read_part(r, keys, app, epoch, uid))


async def record_feedback(
    r: aioredis.Redis,
    keys: Keys,
    app: str,
    epoch: str,
    uid: str | None,
    feedback: Mapping[str, ArmFeedback],
    feedback_id: str | None = None,
) -> int:
    """Add one feedback message to the app's state and, with ``uid``, to the user's part.

    One atomic script: it counts nothing if the app's ``policy_epoch`` is no longer
    ``epoch`` (``STALE``: a reset or a policy change raced with it), or if
    ``feedback_id`` was counted in the last day (``DUPLICATE``); else ``RECORDED``.
    The increments commute, so concurrent query frontends never overwrite each other.
    """
    for arm, fb in feedback.items():
        for value in (fb.start, fb.log_weight, fb.loss):
            if not math.isfinite(value):
                raise ValueError(f"feedback for {arm!r} is not finite: {fb}")
    script_keys = [
        keys.app(app),
        keys.policy_state(app, epoch),
        keys.policy_state(app, epoch, uid) if uid is not None else "",
        keys.feedback_seen(app, epoch, feedback_id) if feedback_id is not None else "",
    ]
    args: list[str | int | float] = [
        epoch,
        "1" if uid is not None else "0",
        FEEDBACK_ID_TTL_S,
        USER_STATE_TTL_S,
    ]
    for arm, fb in feedback.items():
        args += [arm, repr(fb.start), repr(fb.log_weight), repr(fb.loss)]
    result = await r.eval(_RECORD_LUA, len(script_keys), *script_keys, *args)
    return int(result)


async def delete_stale_state(r: aioredis.Redis, keys: Keys, app: str) -> int:
    """Delete what ``app`` learned under any epoch but the one it has as the keys go.

    Incremental (SCAN, UNLINK in batches), so Redis never blocks on an app with many
    users; safe to run again after an interruption. Each batch is one script that reads
    the app's ``policy_epoch`` as it unlinks and spares that epoch's keys: an app reset
    again, or deleted and added again, while this runs keeps what it learns meanwhile.
    Returns the keys deleted.
    """
    deleted = 0
    batch: list[str] = []
    async for key in r.scan_iter(match=keys.policy_pattern(app), count=1000):
        batch.append(text(key))
        if len(batch) >= 500:
            deleted += await _unlink_stale(r, keys, app, batch)
            batch = []
    if batch:
        deleted += await _unlink_stale(r, keys, app, batch)
    return deleted


# Unlink learned-state keys unless they belong to the app's epoch at this moment.
# KEYS: app record, then the state keys; ARGV: the epoch of each state key, in order
_UNLINK_STALE_LUA = """
local current = false
if redis.call('EXISTS', KEYS[1]) == 1 then
  current = redis.call('HGET', KEYS[1], 'policy_epoch') or ''
end
local stale = {}
for i = 2, #KEYS do
  if ARGV[i - 1] ~= current then stale[#stale + 1] = KEYS[i] end
end
if #stale == 0 then return 0 end
return redis.call('UNLINK', unpack(stale))
"""


async def _unlink_stale(r: aioredis.Redis, keys: Keys, app: str, batch: list[str]) -> int:
    epochs = [keys.policy_epoch_of(app, key) for key in batch]
    script_keys = [keys.app(app), *batch]
    return int(await r.eval(_UNLINK_STALE_LUA, len(script_keys), *script_keys, *epochs))
