"""Selection policies: their parameters, the learned state and its arithmetic.

An app's *arms* are its links: ``"model"`` (whatever version is current) or
``"model:version"`` (that version, pinned). Its policy decides which arms answer a query:

    single   the one linked arm (the default)
    split    one arm per query, drawn by fixed weights; sticky per user id
    exp3     one arm per query, drawn by a bandit that learns from feedback
    exp4     every arm; the answers are combined by weights learned from feedback

This module is the contract's word on both: ``PolicyParams.parse`` validates and fills
in an app's ``policy_params``, and ``PolicyState`` is the record under
``{p}:app:{app}:policy:{epoch}`` with the arithmetic that turns it into probabilities.
The query frontend learns (``query_frontend.selection``: it writes the record); the
management frontend reports it and forgets it (``management_frontend.storage``).
Neither needs the other for it.

The state is *additive*: each feedback adds to an arm's log-weight, update count and
loss sum with HINCRBYFLOAT/HINCRBY, so several query frontends learn into the same
record without a lock and without losing each other's updates. A user's record
(``...:policy:{epoch}:user:{uid}``) holds only what that user's feedback added; the
user's view is the app's record plus their own. The app record's ``policy_epoch`` names
the state in use: forgetting it (a reset, a new policy) is writing a new epoch, and the
old keys are deleted in the background by the management frontend.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from management_frontend.state import rules
from management_frontend.state.errors import InvalidValue

# The policy names are rules' (a request names them); they are found here too, with
# the rest of the policies.
SINGLE: Final = rules.SINGLE
SPLIT: Final = rules.SPLIT
EXP3: Final = rules.EXP3
EXP4: Final = rules.EXP4
POLICIES: Final = rules.POLICIES
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
        raise InvalidValue(f"{what} must be a number, got {value!r}")
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise InvalidValue(f"{what} must be a finite number, got {rules.show(value)}")
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
        """Validate ``raw`` for ``policy``; ``InvalidValue`` says which setting and why."""
        if policy not in POLICIES:
            raise InvalidValue(f"policy {policy!r} is not known: use one of {', '.join(POLICIES)}")
        if not isinstance(raw, Mapping):
            raise InvalidValue(f"policy parameters must be an object, got {raw!r}")
        allowed = _ALLOWED[policy]
        unknown = sorted(set(raw) - set(allowed))
        if unknown:
            raise InvalidValue(
                f"policy {policy!r} takes no parameter {', '.join(map(repr, unknown))}: "
                f"it takes {', '.join(map(repr, allowed))}"
            )
        settings: dict[str, Any] = {}
        if "loss" in raw:
            loss = raw["loss"]
            if loss not in LOSSES:
                raise InvalidValue(f"loss {loss!r} is not known: use one of {', '.join(LOSSES)}")
            settings["loss"] = loss
        if "eta" in raw:
            eta = _number(raw["eta"], "eta")
            if not 0 < eta <= MAX_ETA:
                raise InvalidValue(
                    f"eta must be > 0 and <= {MAX_ETA:g} (the learning rate), got {eta}"
                )
            settings["eta"] = eta
        if "gamma" in raw:
            gamma = _number(raw["gamma"], "gamma")
            if not 0 < gamma <= 1:
                raise InvalidValue(
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
        raise InvalidValue(
            'weights must be a non-empty object of arm -> weight, e.g. {"m:1": 90, "m:2": 10}'
        )
    weights: dict[str, float] = {}
    for arm, value in raw.items():
        rules.check_arm(arm)
        weight = _number(value, f"the weight of {arm!r}")
        if weight < 0:
            raise InvalidValue(f"the weight of {arm!r} must be >= 0, got {weight:g}")
        weights[arm] = weight
    if not any(weights.values()):
        raise InvalidValue("weights must give at least one arm a weight > 0")
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
        typical loss is, to make losses unitless (``query_frontend.selection.feedback``)."""
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
# What recording one feedback message can come to (the query frontend's script answers).
RECORDED: Final = 1
STALE: Final = 0  # the app is gone, or its policy changed or was reset meanwhile
DUPLICATE: Final = 2  # this feedback id was counted before


def new_epoch() -> str:
    """A fresh ``policy_epoch``: state learned under any other one is no longer read."""
    return secrets.token_hex(4)
