"""Unit tests for the rules a pipeline keeps when it is set
(``management_frontend.storage.pipelines``: ``check_stages`` and ``plan_stages``, which
need no Redis): each refusal says which stage and what to fix (both stages for a type
mismatch), and each stage keeps its epoch only while its policy stays the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest

from management_frontend.errors import Conflict, Invalid
from management_frontend.state.pipelines import MAX_STAGES
from management_frontend.state.records import App, Model, ModelVersion, Stage
from management_frontend.storage.pipelines import check_stages, plan_stages
from model_container.protocol import InputType

APP = App("app1", InputType.STRINGS, "-1", 100_000, policy_epoch="e1")


def model(name: str, input_type: str, *versions: str, current: str | None = "1") -> Model:
    return Model(name, InputType(input_type), current, list(versions or ("1",)))


def version(name: str, ver: str, input_type: str, output_type: str = "") -> ModelVersion:
    return ModelVersion(name, ver, InputType(input_type), output_type=output_type)


MODELS = {
    "feat": model("feat", "strings", "1", "2"),
    "tokens": model("tokens", "strings"),
    "clf": model("clf", "doubles"),
    "clf2": model("clf2", "doubles"),
    "vote": model("vote", "ints"),
    "any": model("any", "json"),
    "fresh": model("fresh", "strings", current=None),
}
VERSIONS = {
    ("feat", "1"): version("feat", "1", "strings", "doubles"),
    ("feat", "2"): version("feat", "2", "strings", "strings"),
    ("tokens", "1"): version("tokens", "1", "strings", "strings"),
    ("clf", "1"): version("clf", "1", "doubles", "ints"),
    ("clf2", "1"): version("clf2", "1", "doubles"),
    ("vote", "1"): version("vote", "1", "ints", "doubles"),
    ("any", "1"): version("any", "1", "json", "json"),
}


def stages(*specs: Sequence[str] | tuple[Sequence[str], str, dict[str, Any]]) -> list[Stage]:
    out = []
    for spec in specs:
        if isinstance(spec, tuple):
            arms, policy, params = spec
            out.append(Stage(list(arms), policy, params))
        else:
            out.append(Stage(list(spec)))
    return check_stages(out)


def plan(wanted: list[Stage], app: App = APP, links: Sequence[str] = (), **kw: bool) -> list[Stage]:
    return plan_stages(app, list(links), wanted, MODELS, VERSIONS, **kw)


def refusal(error: type[Exception], call: Any) -> str:
    with pytest.raises(error) as caught:
        call()
    return str(caught.value)


# --------------------------------------------------------------------- the request alone


@pytest.mark.parametrize(
    ("wanted", "fragments"),
    [
        ([], ["a pipeline needs at least one stage"]),
        ([Stage(["feat"])] * (MAX_STAGES + 1), [f"at most {MAX_STAGES} stages, got 9"]),
        ([Stage(["feat"]), Stage([])], ["stage 2 has no arms"]),
        ([Stage(["Feat"])], ["stage 1 ('Feat'): model name 'Feat' is not a DNS-1123 label"]),
        ([Stage(["feat:"])], ["stage 1 ('feat:'): model version '' is not valid"]),
        ([Stage(["feat"]), Stage(["clf"], "weighted")], ["stage 2 ('clf'): policy 'weighted'"]),
        (
            [Stage(["feat"], "exp3", {"eta": -1})],
            ["stage 1 ('feat'): eta must be > 0 and <= 10"],
        ),
        (
            [Stage(["feat"]), Stage(["clf", "clf2"])],
            ["stage 2 ('clf', 'clf2'): it has 2 arms and the 'single' policy serves one"],
        ),
        (
            [Stage(["feat"]), Stage(["clf", "clf2"], "split", {"weights": {"clf": 1, "x": 2}})],
            ["stage 2 ('clf', 'clf2'): the split weights name 'x', which is not an arm"],
        ),
        (
            [Stage(["clf", "clf"], "exp4")],
            ["stage 1 ('clf', 'clf'): it names 'clf' more than once"],
        ),
    ],
)
def test_a_bad_request_is_refused_naming_the_stage(
    wanted: list[Stage], fragments: list[str]
) -> None:
    message = refusal(Invalid, lambda: check_stages(wanted))
    for fragment in fragments:
        assert fragment in message


def test_a_request_is_normalised() -> None:
    got = check_stages([Stage(["feat"]), Stage(["vote", "clf:1"], "exp4", {"eta": 0.5})])
    assert got == [
        Stage(["feat"], "single", {"loss": "auto"}),
        Stage(["clf:1", "vote"], "exp4", {"eta": 0.5, "loss": "auto"}),
    ]
    assert check_stages([Stage(["feat"])] * MAX_STAGES)  # the most a pipeline may have


# --------------------------------------------------------------------- the stored state


def test_a_type_mismatch_names_both_stages_and_what_to_do() -> None:
    message = refusal(Invalid, lambda: plan(stages(["tokens"], ["clf"])))
    assert message == (
        "stage 2 ('clf') takes input type 'doubles' but stage 1 ('tokens') answers with "
        "'tokens:1', which declares output type 'strings': give stage 2 models taking "
        "'strings', 'json', or give stage 1 a model whose declared output type stage 2 "
        "takes ('ints', 'floats', 'doubles', 'json')"
    )


def test_the_version_an_arm_resolves_to_is_the_one_checked() -> None:
    # feat:1 declares doubles, feat:2 strings; the plain arm follows the current (1).
    assert len(plan(stages(["feat"], ["clf"]))) == 2
    message = refusal(Invalid, lambda: plan(stages(["feat:2"], ["clf"])))
    assert "stage 1 ('feat:2') answers with 'feat:2', which declares output type 'strings'" in (
        message
    )
    # A later stage: stage 3 takes ints from clf, not the doubles vote answers.
    message = refusal(Invalid, lambda: plan(stages(["feat"], ["vote"], ["clf"])))
    assert message.startswith("stage 2 ('vote') takes input type 'ints' but stage 1 ('feat')")
    message = refusal(Invalid, lambda: plan(stages(["feat"], ["clf"], ["vote"], ["vote"])))
    assert message.startswith("stage 4 ('vote') takes input type 'ints' but stage 3 ('vote')")


@pytest.mark.parametrize(
    "wanted",
    [
        [["feat"], ["clf", "clf2"]],  # every arm of stage 1 checked; none refused
        [["feat"], ["clf2"], ["clf"]],  # clf2 declares nothing: checked at run time
        [["feat"], ["any"]],  # a json stage takes anything
        [["feat"], ["any"], ["clf"]],  # any declares json: checked at run time
        [["fresh"], ["clf"]],  # no current version yet: nothing declared
        [["feat"], ["clf"], ["vote"]],  # ints into ints
    ],
)
def test_what_is_declared_compatible_or_undeclared_is_accepted(wanted: list[list[str]]) -> None:
    specs = [(arms, "exp4" if len(arms) > 1 else "single", {}) for arms in wanted]
    assert [s.arms for s in plan(stages(*specs))] == [sorted(a) for a in wanted]


def test_a_later_stage_of_mixed_input_types_is_refused() -> None:
    wanted = stages(["feat"], (["clf", "vote"], "exp3", {}))
    message = refusal(Invalid, lambda: plan(wanted))
    assert message == (
        "stage 2 ('clf', 'vote'): its arms take different input types ('clf' takes "
        "'doubles', 'vote' takes 'ints'): the arms of one stage take the same input type"
    )


def test_stage_1_of_another_input_type_than_the_app_is_a_conflict() -> None:
    message = refusal(Conflict, lambda: plan(stages(["clf"])))
    assert "stage 1 ('clf') takes input type 'doubles' but app 'app1' takes 'strings'" in message


@pytest.mark.parametrize(
    ("arm", "fragment"),
    [
        ("nope", "stage 2 ('nope'): model 'nope' does not exist: deploy a version of it first"),
        ("clf:9", "stage 2 ('clf:9'): model 'clf' has no version '9' (its versions: '1')"),
    ],
)
def test_unknown_models_and_versions_are_refused(arm: str, fragment: str) -> None:
    assert fragment in refusal(Invalid, lambda: plan(stages(["feat"], [arm])))


# --------------------------------------------------------------------- epochs


def test_each_stage_keeps_its_epoch_while_its_policy_stays() -> None:
    app = APP
    first = plan(stages(["feat"], (["clf", "clf2"], "exp3", {})), app)
    assert first[0].policy_epoch == "e1"  # stage 1 keeps the app's epoch
    assert first[1].policy_epoch not in ("", "e1")
    stored = replace(app, stages=tuple(first[1:]))  # what set_pipeline wrote
    # Other arms and settings, the same policies: every epoch kept.
    again = plan(stages(["feat:1"], (["clf"], "exp3", {"eta": 1.0})), stored, ["feat"])
    assert [s.policy_epoch for s in again] == [s.policy_epoch for s in first]
    # Stage 2 under another policy starts afresh; stage 1 is left alone.
    changed = plan(stages(["feat"], (["clf", "clf2"], "exp4", {})), stored, ["feat"])
    assert changed[0].policy_epoch == "e1"
    assert changed[1].policy_epoch != first[1].policy_epoch
    # A stage that is new at its position gets a new epoch.
    longer = plan(stages(["feat"], (["clf", "clf2"], "exp3", {}), ["clf"]), stored, ["feat"])
    assert longer[1].policy_epoch == first[1].policy_epoch
    assert longer[2].policy_epoch not in {s.policy_epoch for s in first}
    # reset_state renews every stage.
    reset = plan(
        stages(["feat"], (["clf", "clf2"], "exp3", {})), stored, ["feat"], reset_state=True
    )
    assert not {s.policy_epoch for s in reset} & {s.policy_epoch for s in first}
    assert len({s.policy_epoch for s in reset}) == 2
