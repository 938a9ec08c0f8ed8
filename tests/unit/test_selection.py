"""Selection policies without a cluster: parameters, drawing arms, combining, learning.

The cluster tests (tests/integration/test_selection_policies.py) show the same
behaviour end to end; these pin the arithmetic down and cover the edge cases.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

import orjson
import pytest

from management_frontend.state.errors import InvalidValue
from management_frontend.state.keys import arm_name, parse_arm
from management_frontend.state.policy import (
    ArmFeedback,
    ArmState,
    PolicyParams,
    PolicyState,
    split_shares,
)
from management_frontend.state.records import App
from model_container.protocol import InputType
from query_frontend.queries import Failure
from query_frontend.routing.table import Arm, Route
from query_frontend.selection.ask import Asked, answers
from query_frontend.selection.choose import Choice, chooser, sticky_point
from query_frontend.selection.ensemble import combine, vote
from query_frontend.selection.feedback import Answered, LabelError, learn, loss_kind, measure


def route(policy: str, arms: list[str], **params: Any) -> Route:
    app = App("a", InputType.DOUBLES, None, 100_000, policy)
    resolved = tuple(
        Arm(name, (parse_arm(name)[0], parse_arm(name)[1] or "1"), label=name) for name in arms
    )
    return Route(app, None, "", resolved, PolicyParams.parse(policy, params))


def apply(state: PolicyState, feedback: dict[str, ArmFeedback]) -> None:
    state.updates += 1
    for arm, fb in feedback.items():
        entry = state.arms.setdefault(arm, ArmState())
        entry.log_weight += fb.log_weight
        entry.updates += 1
        entry.loss_sum += fb.loss


# ---------------------------------------------------------------------- parameters


def test_arms_are_models_or_pinned_versions() -> None:
    assert arm_name("m") == "m" and parse_arm("m") == ("m", None)
    assert arm_name("m", "2") == "m:2" and parse_arm("m:2") == ("m", "2")


def test_policy_params_fill_in_defaults_per_policy() -> None:
    assert PolicyParams.parse("exp3", {}).to_json() == {"eta": 0.1, "gamma": 0.1, "loss": "auto"}
    assert PolicyParams.parse("exp4", {"eta": 0.5}).to_json() == {"eta": 0.5, "loss": "auto"}
    split = PolicyParams.parse("split", {"weights": {"m:1": 9, "m:2": 1}})
    assert split.to_json() == {"weights": {"m:1": 9.0, "m:2": 1.0}, "loss": "auto"}
    assert PolicyParams.parse("single", {}).to_json() == {"loss": "auto"}


@pytest.mark.parametrize(
    ("policy", "params", "words"),
    [
        ("exp3", {"weights": {"m": 1}}, ["takes no parameter 'weights'", "'eta', 'gamma'"]),
        ("exp3", {"eta": 0}, ["eta must be > 0"]),
        ("exp3", {"eta": True}, ["eta must be a number"]),
        ("exp3", {"gamma": 1.5}, ["gamma must be > 0 and <= 1"]),
        ("exp4", {"loss": "hinge"}, ["loss 'hinge' is not known", "zero_one"]),
        ("split", {"weights": {"m:1": -1}}, ["weight of 'm:1' must be >= 0"]),
        ("split", {"weights": {"m:1": 0}}, ["at least one arm a weight > 0"]),
        ("split", {"weights": {"Bad_Name": 1}}, ["not a DNS-1123 label"]),
        ("split", {"weights": []}, ["weights must be a non-empty object"]),
        ("bandit", {}, ["policy 'bandit' is not known"]),
    ],
)
def test_bad_policy_params_are_refused_with_what_to_fix(
    policy: str, params: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(InvalidValue) as info:
        PolicyParams.parse(policy, params)
    for word in words:
        assert word in str(info.value)


# ---------------------------------------------------------------------- state


def test_a_user_sees_the_apps_state_plus_their_own_part() -> None:
    app = PolicyState({"a": ArmState(-1.0, 10, 3.0)}, updates=10)
    mine = PolicyState({"a": ArmState(-0.5, 2, 1.0), "b": ArmState(-2.0, 1, 1.0)}, updates=3)
    both = app.plus(mine)
    assert both.updates == 13
    assert both.arms["a"] == ArmState(-1.5, 12, 4.0)
    assert both.arms["b"] == ArmState(-2.0, 1, 1.0)


def test_state_reads_back_from_its_redis_hash() -> None:
    h = {"updates": "4", "w:m:1": "-0.25", "n:m:1": "4", "l:m:1": "1.0", "w:m2": "-1"}
    state = PolicyState.from_hash(h)
    assert state.updates == 4
    assert state.arms["m:1"] == ArmState(-0.25, 4, 1.0)
    assert state.arms["m2"].log_weight == -1.0


def test_a_newly_linked_arm_starts_level_with_the_best_one() -> None:
    state = PolicyState({"a": ArmState(-10.0), "b": ArmState(-2.0)})
    assert state.log_weights(["a", "b", "new"]) == [-10.0, -2.0, -2.0]


def test_exp3_keeps_exploring_every_arm() -> None:
    state = PolicyState({"a": ArmState(0.0), "b": ArmState(-1000.0), "c": ArmState(-1000.0)})
    probs = state.probabilities(PolicyParams.parse("exp3", {"gamma": 0.3}), ["a", "b", "c"])
    assert probs == pytest.approx([0.8, 0.1, 0.1])


def test_split_shares_follow_weights_and_fall_back_to_equal() -> None:
    assert split_shares({"a": 9, "b": 1}, ["a", "b"]) == pytest.approx([0.9, 0.1])
    assert split_shares(None, ["a", "b"]) == [0.5, 0.5]
    assert split_shares({"a": 1}, ["a", "b"]) == [1.0, 0.0]
    assert split_shares({"gone": 1}, ["a", "b"]) == [0.5, 0.5]


# ---------------------------------------------------------------------- drawing


def test_split_sends_its_share_and_sticky_users_stay_put() -> None:
    r = route("split", ["m:1", "m:2"], weights={"m:1": 90, "m:2": 10})
    rng = random.Random(1)
    choose = chooser(r, r.arms, r.arms, PolicyState(), None, rng)
    picks = Counter(choose().arms[0].name for _ in range(10_000))
    assert 900 <= picks["m:2"] <= 1100
    for uid in ("alice", "bob", "u-17"):
        first = chooser(r, r.arms, r.arms, PolicyState(), uid, rng)().arms[0]
        assert all(
            chooser(r, r.arms, r.arms, PolicyState(), uid, rng)().arms[0] == first
            for _ in range(20)
        )


def test_growing_the_canary_keeps_its_users_on_it() -> None:
    small = route("split", ["m:1", "m:2"], weights={"m:1": 90, "m:2": 10})
    large = route("split", ["m:1", "m:2"], weights={"m:1": 50, "m:2": 50})
    rng = random.Random(0)
    users = [f"user-{i}" for i in range(500)]
    on_canary = [
        u
        for u in users
        if chooser(small, small.arms, small.arms, PolicyState(), u, rng)().arms[0].name == "m:2"
    ]
    assert on_canary
    assert all(
        chooser(large, large.arms, large.arms, PolicyState(), u, rng)().arms[0].name == "m:2"
        for u in on_canary
    )


def test_a_split_arm_that_is_down_hands_its_users_to_the_others() -> None:
    r = route("split", ["a", "b", "c"])
    up = (r.arms[0], r.arms[2])
    rng = random.Random(0)
    picks = {chooser(r, r.arms, up, PolicyState(), f"u{i}", rng)().arms[0].name for i in range(300)}
    assert picks == {"a", "c"}


def test_sticky_points_are_stable_and_spread() -> None:
    assert sticky_point("app", "alice") == sticky_point("app", "alice")
    assert sticky_point("app", "alice") != sticky_point("other-app", "alice")
    points = [sticky_point("app", str(i)) for i in range(2000)]
    assert 0.45 < sum(points) / len(points) < 0.55


def test_exp4_asks_every_arm_that_can_answer() -> None:
    r = route("exp4", ["a", "b", "c"])
    choose = chooser(r, r.arms, r.arms[:2], PolicyState(), None, random.Random())
    assert [a.name for a in choose().arms] == ["a", "b"]


class Fixed(random.Random):
    """Draws ``point``, always."""

    def __init__(self, point: float) -> None:
        super().__init__()
        self.point = point

    def random(self) -> float:
        return self.point


def test_draw_reports_the_probability_the_arm_had() -> None:
    r = route("split", ["a", "b"], weights={"a": 3, "b": 1})
    choice = chooser(r, r.arms, r.arms, PolicyState(), None, Fixed(0.9))()
    assert choice.arms[0].name == "b" and choice.probability == pytest.approx(0.25)


# ---------------------------------------------------------------------- combining


def test_numbers_are_averaged_by_weight() -> None:
    out = orjson.loads(combine([b"1.0", b"3.0"], [0.75, 0.25], "auto"))
    assert out == pytest.approx(1.5)
    vec = orjson.loads(combine([b"[0.0,1.0]", b"[1.0,0.0]"], [0.5, 0.5], "squared"))
    assert vec == pytest.approx([0.5, 0.5])


def test_classes_are_voted_by_weight() -> None:
    assert combine([b'"cat"', b'"dog"', b'"dog"'], [0.45, 0.35, 0.2], "auto") == b'"dog"'
    assert combine([b'"cat"', b'"dog"', b'"dog"'], [0.6, 0.3, 0.1], "auto") == b'"cat"'
    # Whole numbers are class labels under "auto": voted, never averaged to 0.5.
    assert combine([b"0", b"1"], [0.6, 0.4], "auto") == b"0"
    assert vote([{"b": 1, "a": 2}, {"a": 2, "b": 1}], [0.4, 0.4]) == 0


def test_answers_that_cannot_be_averaged_are_voted() -> None:
    assert combine([b"[1.0,2.0]", b"[1.0]"], [0.4, 0.6], "squared") == b"[1.0]"


# ---------------------------------------------------------------------- losses and learning


def test_losses() -> None:
    assert measure("zero_one", "cat", "cat", "m") == 0.0
    assert measure("zero_one", 1, 1.0, "m") == 0.0
    assert measure("zero_one", "cat", "dog", "m") == 1.0
    assert measure("squared", [1.0, 2.0], [0.0, 0.0], "m") == 5.0
    assert measure("absolute", 1.5, 3.0, "m") == 1.5
    # "auto" goes by the answers, as combining them does: floats are numbers, the rest classes.
    assert loss_kind("auto", [2.0, 3]) == "squared"
    assert loss_kind("auto", [0, 1]) == "zero_one"
    assert loss_kind("auto", ["dog"]) == "zero_one"
    assert loss_kind("absolute", [0, 1]) == "absolute"


def test_a_label_that_does_not_fit_the_loss_is_refused() -> None:
    with pytest.raises(LabelError, match="numeric label"):
        measure("squared", 1.0, "cat", "m:1")
    with pytest.raises(LabelError, match="same shape"):
        measure("squared", [1.0, 2.0], [1.0], "m:1")


def test_exp3_penalises_the_drawn_arm_by_importance() -> None:
    params = PolicyParams.parse("exp3", {"eta": 0.1})
    rare = learn(
        params, [Answered("a", "a:1", "x")], "y", probability=0.1, weights=[], scale=(0, 0)
    )
    common = learn(
        params, [Answered("a", "a:1", "x")], "y", probability=0.5, weights=[], scale=(0, 0)
    )
    assert rare.arms["a"].log_weight == pytest.approx(-1.0)
    assert common.arms["a"].log_weight == pytest.approx(-0.2)
    right = learn(
        params, [Answered("a", "a:1", "y")], "y", probability=0.5, weights=[], scale=(0, 0)
    )
    assert right.arms["a"].log_weight == 0.0 and right.losses == {"a:1": 0.0}


def test_split_only_counts_losses() -> None:
    params = PolicyParams.parse("split", {})
    lesson = learn(
        params, [Answered("a", "a:1", 1.0)], 3.0, probability=1, weights=[], scale=(0, 0)
    )
    assert lesson.arms["a"] == ArmFeedback(0.0, 4.0)


def test_exp3_learns_the_good_arm_from_bandit_feedback() -> None:
    params = PolicyParams.parse("exp3", {})
    r = route("exp3", ["good", "bad1", "bad2"])
    accuracy = {"good": 0.9, "bad1": 0.5, "bad2": 0.5}
    state, rng = PolicyState(), random.Random(7)
    for _ in range(300):
        choice = chooser(r, r.arms, r.arms, state, None, rng)()
        arm = choice.arms[0]
        answer = 1 if rng.random() < accuracy[arm.name] else 0
        lesson = learn(
            params,
            [Answered(arm.name, arm.name, answer)],
            1,
            probability=choice.probability,
            weights=[],
            scale=(0, 0),
        )
        apply(state, lesson.arms)
    assert state.probabilities(params, ["good", "bad1", "bad2"])[0] > 0.8


def test_exp4_learns_a_mix_better_than_the_best_regressor() -> None:
    params = PolicyParams.parse("exp4", {})
    names = ["a", "b", "c"]
    noise = [1.0, 1.2, 1.5]
    state, rng = PolicyState(), random.Random(3)
    errors: list[float] = []
    single: list[list[float]] = [[], [], []]
    for _ in range(400):
        y = rng.uniform(-10, 10)
        preds = [y + rng.gauss(0, s) for s in noise]
        weights = state.probabilities(params, names)
        combined = orjson.loads(combine([orjson.dumps(p) for p in preds], weights, "auto"))
        errors.append((combined - y) ** 2)
        for k, p in enumerate(preds):
            single[k].append((p - y) ** 2)
        total = sum(a.loss_sum for a in state.arms.values())
        count = sum(a.updates for a in state.arms.values())
        answered = [Answered(n, n, p) for n, p in zip(names, preds, strict=True)]
        lesson = learn(params, answered, y, probability=1, weights=weights, scale=(total, count))
        apply(state, lesson.arms)
    best_single = min(sum(e) / len(e) for e in single)
    assert sum(errors) / len(errors) < 0.8 * best_single


def test_exp4_on_classes_moves_weight_to_the_model_that_is_right() -> None:
    params = PolicyParams.parse("exp4", {})
    answered = [Answered("a", "a:1", "cat"), Answered("b", "b:1", "dog")]
    lesson = learn(params, answered, "cat", probability=1, weights=[0.5, 0.5], scale=(0, 0))
    assert lesson.arms["a"].log_weight == 0.0
    assert lesson.arms["b"].log_weight == pytest.approx(-0.1)


def test_a_label_with_an_infinite_loss_is_refused_not_learned() -> None:
    params = PolicyParams.parse("exp3", {})
    with pytest.raises(LabelError, match="not a finite number"):
        learn(params, [Answered("a", "a:1", 1.0)], 1e200, probability=0.5, weights=[], scale=(0, 0))


def test_one_outlier_label_does_not_stop_learning() -> None:
    params = PolicyParams.parse("exp3", {})
    history = (100.0, 100)  # a typical loss of 1
    outlier = learn(
        params, [Answered("a", "a:1", 1.0)], 1e100, probability=0.5, weights=[], scale=history
    )
    counted = outlier.arms["a"].loss
    assert counted == pytest.approx(100.0)  # capped at 100 typical losses
    assert outlier.losses == {"a:1": pytest.approx(1e200)}  # the answer reports the real one
    later = learn(
        params,
        [Answered("a", "a:1", 1.0)],
        3.0,
        probability=0.5,
        weights=[],
        scale=(history[0] + counted, history[1] + 1),
    )
    assert later.arms["a"].log_weight < -0.1  # a loss of 4 still teaches something


def test_labels_too_deep_to_compare_are_refused() -> None:
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    with pytest.raises(LabelError):
        learn(PolicyParams.parse("exp3", {}), [Answered("a", "a:1", "x")], deep,
              probability=1, weights=[], scale=(0, 0))  # fmt: skip


def test_an_ensemble_with_one_numeric_answer_learns_no_mix() -> None:
    params = PolicyParams.parse("exp4", {})
    lesson = learn(params, [Answered("a", "a:1", 2.5)], 1.0, probability=1, weights=[1.0],
                   scale=(0, 0))  # fmt: skip
    assert lesson.arms["a"].log_weight == 0.0 and lesson.arms["a"].loss == pytest.approx(2.25)


def test_an_arms_first_feedback_starts_it_level_with_the_best() -> None:
    params = PolicyParams.parse("exp3", {})
    state = PolicyState({"a": ArmState(-40.0, 100, 10.0), "b": ArmState(-45.0, 100, 50.0)})
    names = ["a", "b", "new"]
    starts = dict(zip(names, state.log_weights(names), strict=True))
    lesson = learn(params, [Answered("new", "new:1", 0)], 1, probability=0.3, weights=[],
                   scale=(60.0, 200), starts=starts)  # fmt: skip
    assert lesson.arms["new"].start == -40.0
    # Recorded as the store's script records it: the start, then the step.
    fb = lesson.arms["new"]
    state.arms["new"] = ArmState(fb.start + fb.log_weight, 1, fb.loss)
    probs = state.probabilities(params, names)
    assert probs[2] < probs[0]  # one wrong answer puts it below the best, not on top


@pytest.mark.parametrize("expose", [False, True])
def test_an_ensembles_partial_answer_names_a_failed_arm_as_its_app_allows(expose: bool) -> None:
    """exp4's "partial_explanation" says why an arm is missing: the model's exception
    type, and its message only for an app that exposes model errors."""
    r = route("exp4", ["a", "b"])
    r = dataclasses.replace(r, app=dataclasses.replace(r.app, expose_model_errors=expose))
    failure = Failure("model a raised KeyError", "model a raised KeyError: 'db-password'")
    asked = Asked(Choice(r.arms), [(r.arms[0], failure), (r.arms[1], b"1.0")])
    (answer,) = answers(r, [asked], PolicyState())
    assert answer.outcome == b"1.0"
    ((missing, why),) = answer.missing
    assert missing == "a" and "raised KeyError" in why
    assert ("db-password" in why) is expose
