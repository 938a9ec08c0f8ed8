"""Issue 17: an app as a pipeline of stages, set and read through the admin API over a
real Redis. Every rule refuses with a 400 naming the stage (both stages for a type
mismatch) and stores nothing; each stage keeps what its policy learned unless its
policy changes; one feed entry per change; a model used by any stage counts as linked.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from query_frontend.routing.feed import latest_change_id, read_snapshot

from .helpers import APP, KEYS, MODEL, error, feed_after, learned_keys, ok, settled_keys

# A text app: a featuriser taking strings and answering lists of doubles, then
# classifiers taking doubles (two of them, so a stage can hold several arms).
TEXT_APP = {**APP, "input_type": "strings"}
FEAT = {**MODEL, "name": "feat", "input_type": "strings", "output_type": "doubles"}
CLF = {**MODEL, "name": "clf", "input_type": "doubles", "output_type": "ints"}
CLF2 = {**MODEL, "name": "clf2", "input_type": "doubles"}
TOKENS = {**MODEL, "name": "tokens", "input_type": "strings", "output_type": "strings"}
VOTE = {**MODEL, "name": "vote", "input_type": "ints"}


async def text_app(api: httpx.AsyncClient, *models: dict[str, Any]) -> None:
    await ok(api.post("/admin/apps", json=TEXT_APP), 201)
    for model in models:
        await ok(api.post("/admin/models", json=model), 201)


def stage(*arms: str, policy: str = "single", **params: Any) -> dict[str, Any]:
    return {"arms": list(arms), "policy": policy, "policy_params": params}


async def put_pipeline(api: httpx.AsyncClient, *stages: dict[str, Any], **extra: Any) -> Any:
    return await ok(api.put("/admin/apps/app1/pipeline", json={"stages": list(stages), **extra}))


async def stored(r: aioredis.Redis) -> tuple[dict[str, str], list[str]]:
    """The app hash and its links as Redis holds them."""
    return await r.hgetall(KEYS.app("app1")), sorted(await r.smembers(KEYS.links("app1")))


async def test_a_two_stage_pipeline_is_set_read_back_and_seen_by_a_query_frontend(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF)
    before = await ok(api.get("/admin/apps/app1"))
    assert before["pipeline"] == [
        {"arms": [], "policy": "single", "policy_params": {"loss": "auto"},
         "policy_epoch": before["policy_epoch"]}
    ]  # fmt: skip

    app = await put_pipeline(api, {"arms": ["feat"]}, {"arms": ["clf:1"]})
    stages = [s["arms"] for s in app["pipeline"]]
    assert stages == [["feat"], ["clf:1"]]
    assert app["linked_models"] == ["feat"]
    assert "stages" not in app
    # Stage 1 keeps the app's epoch (same policy); stage 2 gets its own.
    first, second = app["pipeline"]
    assert first["policy_epoch"] == before["policy_epoch"]
    assert second["policy_epoch"] and second["policy_epoch"] != first["policy_epoch"]
    assert second["policy"] == "single" and second["policy_params"] == {"loss": "auto"}

    read = await ok(api.get("/admin/apps/app1/pipeline"))
    assert read == {"app": "app1", "stages": app["pipeline"]}
    assert (await ok(api.get("/admin/apps/app1")))["pipeline"] == app["pipeline"]
    listed = {a["name"]: a for a in await ok(api.get("/admin/apps"))}
    assert listed["app1"]["pipeline"] == app["pipeline"]
    assert await ok(api.get("/admin/apps/app1/links")) == ["feat"]

    snap = await read_snapshot(async_redis, KEYS)
    assert snap.links["app1"] == ["feat"]
    assert [(s.arms, s.policy, s.policy_epoch) for s in snap.apps["app1"].stages] == [
        (["clf:1"], "single", second["policy_epoch"])
    ]


async def test_a_three_stage_pipeline_with_an_exp4_middle_stage(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF, {**CLF, "name": "clf3"}, VOTE)
    app = await put_pipeline(
        api,
        stage("feat"),
        stage("clf", "clf3:1", policy="exp4", eta=0.3),
        stage("vote"),
    )
    assert [s["arms"] for s in app["pipeline"]] == [["feat"], ["clf", "clf3:1"], ["vote"]]
    middle = app["pipeline"][1]
    assert (middle["policy"], middle["policy_params"]) == ("exp4", {"eta": 0.3, "loss": "auto"})
    epochs = [s["policy_epoch"] for s in app["pipeline"]]
    assert len(set(epochs)) == 3

    state = await ok(api.get("/admin/apps/app1/policy/state", params={"stage": 2}))
    assert (state["stage"], state["policy"], state["updates"]) == (2, "exp4", 0)
    assert sorted(state["arms"]) == ["clf", "clf3:1"]
    snap = await read_snapshot(async_redis, KEYS)
    assert [s.arms for s in snap.apps["app1"].stages] == [["clf", "clf3:1"], ["vote"]]


async def test_a_type_mismatch_is_400_naming_both_stages_and_stores_nothing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, TOKENS, CLF)
    await put_pipeline(api, stage("feat"), stage("clf"))
    before = await stored(async_redis)
    last = await latest_change_id(async_redis, KEYS)

    message = await error(
        api.put("/admin/apps/app1/pipeline", json={"stages": [stage("tokens"), stage("clf")]}),
        400,
        "invalid",
    )
    assert message.startswith(
        "stage 2 ('clf') takes input type 'doubles' but stage 1 ('tokens') answers with "
        "'tokens:1', which declares output type 'strings'"
    )
    assert "give stage 2 models taking 'strings', 'json'" in message
    assert await stored(async_redis) == before
    assert await feed_after(async_redis, last) == []


# (stages, fragments of the 400's message)
BAD_PIPELINES: list[tuple[object, list[str]]] = [
    ([], ["a pipeline needs at least one stage"]),
    ("feat", ["stages must be a list of stages", "got 'feat'"]),
    ([stage("feat")] * 9, ["a pipeline has at most 8 stages, got 9"]),
    ([stage("feat"), {"arms": []}], ["stage 2 has no arms: give it at least one model"]),
    ([stage("feat"), {"policy": "exp4"}], ["stage 2 has no 'arms'"]),
    ([["feat"]], ["stage 1 must be an object"]),
    ([{"arms": "feat"}], ["stage 1's arms must be a list", "got 'feat'"]),
    ([{"arms": ["Feat"]}], ["stage 1 ('Feat'): model name 'Feat' is not a DNS-1123 label"]),
    ([stage("feat"), stage("clf", policy="greedy")], ["stage 2 ('clf'): policy 'greedy'"]),
    ([stage("feat", eta=0.1)], ["stage 1 ('feat'): policy 'single' takes no parameter 'eta'"]),
    (
        [stage("feat"), stage("clf", "clf2")],
        ["stage 2 ('clf', 'clf2'): it has 2 arms and the 'single' policy serves one"],
    ),
    (
        [stage("feat"), stage("clf", "clf2", policy="split", weights={"clf": 1, "feat": 1})],
        ["stage 2 ('clf', 'clf2'): the split weights name 'feat', which is not an arm"],
    ),
    ([stage("feat"), stage("clf", "clf", policy="exp4")], ["names 'clf' more than once"]),
    ([{**stage("feat"), "policy_epoch": "ab"}], ["'policy_epoch', which is not accepted"]),
    ([stage("feat"), stage("nope")], ["stage 2 ('nope'): model 'nope' does not exist"]),
    ([stage("feat"), stage("clf:7")], ["model 'clf' has no version '7' (its versions: '1')"]),
    (
        [stage("feat"), stage("clf", "feat", policy="exp3")],
        ["stage 2 ('clf', 'feat'): its arms take different input types"],
    ),
]


@pytest.mark.parametrize(("stages", "fragments"), BAD_PIPELINES)
async def test_a_bad_pipeline_is_400_saying_what_to_fix_and_stores_nothing(
    api: httpx.AsyncClient, async_redis: aioredis.Redis, stages: object, fragments: list[str]
) -> None:
    await text_app(api, FEAT, CLF, CLF2)
    before = await stored(async_redis)
    last = await latest_change_id(async_redis, KEYS)
    request = api.put("/admin/apps/app1/pipeline", json={"stages": stages})
    message = await error(request, 400, "invalid")
    for fragment in fragments:
        assert fragment in message
    assert await stored(async_redis) == before
    assert await feed_after(async_redis, last) == []


async def test_a_first_stage_of_another_input_type_than_the_app_is_409_like_a_link(
    api: httpx.AsyncClient,
) -> None:
    await text_app(api, FEAT, CLF)
    message = await error(
        api.put("/admin/apps/app1/pipeline", json={"stages": [stage("clf")]}), 409, "conflict"
    )
    assert "stage 1 ('clf') takes input type 'doubles' but app 'app1' takes 'strings'" in message


async def test_setting_a_pipeline_publishes_one_feed_entry_and_a_same_one_none(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF)
    last = await latest_change_id(async_redis, KEYS)
    await put_pipeline(api, stage("feat"), stage("clf"))
    entries = await feed_after(async_redis, last)
    assert [e for _, e in entries] == [{"kind": "app", "op": "set_pipeline", "app": "app1"}]

    last = entries[-1][0]
    await put_pipeline(api, stage("feat"), stage("clf"))
    assert await feed_after(async_redis, last) == []


async def test_each_stage_keeps_its_epoch_while_its_policy_stays(
    api: httpx.AsyncClient,
) -> None:
    await text_app(api, FEAT, CLF, CLF2)
    first = (await put_pipeline(api, stage("feat"), stage("clf", "clf2", policy="exp3")))[
        "pipeline"
    ]
    # New settings and arms under the same policies: both stages keep what they learned.
    again = (
        await put_pipeline(api, stage("feat"), stage("clf", "clf2:1", policy="exp3", eta=0.5))
    )["pipeline"]
    assert [s["policy_epoch"] for s in again] == [s["policy_epoch"] for s in first]
    # Another policy in stage 2 starts it afresh; stage 1 keeps its epoch.
    changed = (await put_pipeline(api, stage("feat"), stage("clf", "clf2", policy="exp4")))[
        "pipeline"
    ]
    assert changed[0]["policy_epoch"] == first[0]["policy_epoch"]
    assert changed[1]["policy_epoch"] != first[1]["policy_epoch"]
    # reset_state renews every stage.
    reset = (
        await put_pipeline(
            api, stage("feat"), stage("clf", "clf2", policy="exp4"), reset_state=True
        )
    )["pipeline"]
    assert reset[0]["policy_epoch"] != changed[0]["policy_epoch"]
    assert reset[1]["policy_epoch"] != changed[1]["policy_epoch"]
    # Back to one stage: the app is today's app again.
    one = await put_pipeline(api, stage("feat"))
    assert [s["arms"] for s in one["pipeline"]] == [["feat"]]
    assert one["policy_epoch"] == reset[0]["policy_epoch"]


async def test_one_stage_makes_the_app_todays_app(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF, TOKENS)
    await ok(api.post("/admin/apps/app1/links", json={"model_name": "tokens"}))
    await put_pipeline(api, stage("feat"), stage("clf"))
    app = await put_pipeline(api, stage("feat", "tokens", policy="split"))
    assert app["linked_models"] == ["feat", "tokens"]
    assert (app["policy"], app["policy_params"]) == ("split", {"weights": None, "loss": "auto"})
    h, links = await stored(async_redis)
    assert (h["stages"], links) == ("[]", ["feat", "tokens"])
    # Links work on stage 1 as they always did.
    await ok(api.delete("/admin/apps/app1/links/tokens"), 204)
    assert (await ok(api.get("/admin/apps/app1/pipeline")))["stages"][0]["arms"] == ["feat"]


async def test_a_stage_policy_changes_only_that_stage(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF, CLF2, VOTE)
    before = (
        await put_pipeline(api, stage("feat"), stage("clf", "clf2", policy="exp3"), stage("vote"))
    )["pipeline"]
    last = await latest_change_id(async_redis, KEYS)

    body = {"policy": "exp4", "params": {"eta": 0.2}, "stage": 2}
    app = await ok(api.put("/admin/apps/app1/policy", json=body))
    after = app["pipeline"]
    assert (after[1]["policy"], after[1]["policy_params"]) == ("exp4", {"eta": 0.2, "loss": "auto"})
    assert after[1]["policy_epoch"] != before[1]["policy_epoch"]
    assert [after[0], after[2]] == [before[0], before[2]]
    assert app["policy"] == "single"  # the app's own (stage 1) policy is untouched
    entries = await feed_after(async_redis, last)
    assert [e for _, e in entries] == [{"kind": "app", "op": "set_policy", "app": "app1"}]

    # New settings, same policy: the stage keeps its epoch.
    body = {"policy": "exp4", "params": {"eta": 0.5}, "stage": 2}
    kept = (await ok(api.put("/admin/apps/app1/policy", json=body)))["pipeline"]
    assert kept[1]["policy_epoch"] == after[1]["policy_epoch"]

    # The stage's own rules, named by the stage.
    single = {"policy": "single", "stage": 2}
    message = await error(api.put("/admin/apps/app1/policy", json=single), 409, "conflict")
    assert "stage 2 ('clf', 'clf2') of app 'app1' has 2 arms" in message
    split = {"policy": "split", "params": {"weights": {"feat": 1}}, "stage": 2}
    message = await error(api.put("/admin/apps/app1/policy", json=split), 400, "invalid")
    assert "the split weights name 'feat', which is not an arm of stage 2" in message
    message = await error(
        api.put("/admin/apps/app1/policy", json={"policy": "exp3", "stage": 4}), 400, "invalid"
    )
    assert "app 'app1' has no stage 4: its pipeline has 3 stages" in message
    for bad in (0, "2", True, 9):
        body = {"policy": "exp3", "stage": bad}
        message = await error(api.put("/admin/apps/app1/policy", json=body), 400, "invalid")
        assert "stage must be a whole number from 1" in message


async def test_a_stage_policy_state_is_shown_and_reset_alone(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF, CLF2)
    app = await put_pipeline(api, stage("feat"), stage("clf", "clf2", policy="exp3"))
    first, second = (s["policy_epoch"] for s in app["pipeline"])
    # What a query frontend's feedback would have written into each stage's state.
    await async_redis.hset(KEYS.policy_state("app1", first), mapping={"updates": "3"})
    await async_redis.hset(KEYS.policy_state("app1", second), mapping={"updates": "5"})
    await async_redis.hset(KEYS.policy_state("app1", second, "u1"), mapping={"updates": "1"})

    state = await ok(api.get("/admin/apps/app1/policy/state", params={"stage": 2}))
    assert (state["stage"], state["policy"], state["updates"]) == (2, "exp3", 5)
    assert (await ok(api.get("/admin/apps/app1/policy/state")))["updates"] == 3
    user = await ok(api.get("/admin/apps/app1/policy/state", params={"stage": 2, "uid": "u1"}))
    assert user["updates"] == 6

    await ok(api.delete("/admin/apps/app1/policy/state", params={"stage": 2, "uid": "u1"}), 204)
    assert len(await learned_keys(async_redis)) == 2
    await ok(api.delete("/admin/apps/app1/policy/state", params={"stage": 2}), 204)
    # Stage 1's state stays; stage 2 starts afresh under a new epoch.
    assert await settled_keys(async_redis, 1) == [KEYS.policy_state("app1", first)]
    renewed = (await ok(api.get("/admin/apps/app1/pipeline")))["stages"]
    assert renewed[0]["policy_epoch"] == first and renewed[1]["policy_epoch"] != second
    assert (await ok(api.get("/admin/apps/app1/policy/state", params={"stage": 2})))["updates"] == 0
    for bad in ("3", "0", "x"):
        request = api.get("/admin/apps/app1/policy/state", params={"stage": bad})
        await error(request, 400, "invalid")


async def test_clean_up_keeps_what_every_stage_learned(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF, CLF2, VOTE)
    app = await put_pipeline(api, stage("feat"), stage("clf", "clf2", policy="exp3"), stage("vote"))
    epochs = [s["policy_epoch"] for s in app["pipeline"]]
    for epoch in epochs:
        await async_redis.hset(KEYS.policy_state("app1", epoch), "updates", "1")
        await async_redis.hset(KEYS.policy_state("app1", epoch, "u1"), "updates", "1")
    await async_redis.hset(KEYS.policy_state("app1", "0ld"), "updates", "1")

    # A new policy for stage 1 drops its epoch; the later stages keep theirs.
    await ok(api.put("/admin/apps/app1/policy", json={"policy": "exp4"}))
    kept = await settled_keys(async_redis, 4)
    assert kept == sorted(
        KEYS.policy_state("app1", e, uid) for e in epochs[1:] for uid in (None, "u1")
    )
    # A new pipeline whose stage 3 changes policy drops only stage 3's state.
    await put_pipeline(
        api,
        stage("feat", policy="exp4"),
        stage("clf", "clf2", policy="exp3"),
        stage("vote", policy="exp3"),
    )
    assert await settled_keys(async_redis, 2) == sorted(
        KEYS.policy_state("app1", epochs[1], uid) for uid in (None, "u1")
    )


async def test_a_model_in_a_later_stage_counts_as_linked(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF, {**CLF, "version": "2"}, VOTE)
    await put_pipeline(api, stage("feat"), stage("clf:1"), stage("vote"))

    message = await error(api.delete("/admin/models/vote"), 409, "conflict")
    assert "model 'vote' is linked to app(s) 'app1'" in message
    assert "set the app's pipeline without it" in message
    message = await error(api.delete("/admin/models/clf"), 409, "conflict")
    assert "model 'clf' is linked to app(s) 'app1' (as 'clf:1')" in message
    message = await error(api.delete("/admin/models/clf/versions/1"), 409, "conflict")
    assert "version '1' of model 'clf' is pinned by app(s) 'app1'" in message
    message = await error(api.delete("/admin/models/vote/versions/1"), 409, "conflict")
    assert "version '1' is the current version of model 'vote'" in message
    # Version 2 of clf is used by no stage.
    await ok(api.delete("/admin/models/clf/versions/2"), 204)
    assert await async_redis.exists(KEYS.model("vote"))

    message = await error(api.delete("/admin/apps/app1/links/vote"), 404, "not_found")
    assert "it is an arm of a later stage of the app's pipeline" in message

    await put_pipeline(api, stage("feat"))
    await ok(api.delete("/admin/models/vote"), 204)


async def test_a_version_declares_its_output_type(api: httpx.AsyncClient) -> None:
    mv = await ok(api.post("/admin/models", json=FEAT), 201)
    assert mv["output_type"] == "doubles"
    assert (await ok(api.get("/admin/models/feat/versions/1")))["output_type"] == "doubles"
    plain = await ok(api.post("/admin/models", json=MODEL), 201)
    assert plain["output_type"] == ""
    message = await error(
        api.post("/admin/models", json={**FEAT, "version": "2", "output_type": "tensor"}),
        400,
        "invalid",
    )
    assert "output_type 'tensor' is not known: use one of" in message


async def test_pipeline_endpoints_of_an_unknown_app_are_404(api: httpx.AsyncClient) -> None:
    await error(api.get("/admin/apps/nope/pipeline"), 404, "not_found")
    body = {"stages": [stage("feat")]}
    await error(api.put("/admin/apps/nope/pipeline", json=body), 404, "not_found")


async def test_a_link_to_a_pipelines_first_stage_must_feed_its_second(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, {**FEAT, "name": "feat2"}, TOKENS, CLF)
    await put_pipeline(api, stage("feat", policy="exp3"), stage("clf"))
    before = await stored(async_redis)
    request = api.post("/admin/apps/app1/links", json={"model_name": "tokens"})
    message = await error(request, 400, "invalid")
    assert message.startswith(
        "stage 2 ('clf') takes input type 'doubles' but stage 1 ('feat', 'tokens') would "
        "answer with 'tokens:1', which declares output type 'strings'"
    )
    assert await stored(async_redis) == before
    links = await ok(api.post("/admin/apps/app1/links", json={"model_name": "feat2"}))
    assert links == ["feat", "feat2"]


async def test_a_current_version_a_later_stage_cannot_take_is_409(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await text_app(api, FEAT, CLF)
    await put_pipeline(api, stage("feat"), stage("clf"))
    strings = {**FEAT, "version": "2", "output_type": "strings"}
    # Registered and made current at once: refused, nothing stored.
    message = await error(api.post("/admin/models", json=strings), 409, "conflict")
    assert message.startswith(
        "version '2' of model 'feat' declares output type 'strings', which stage 2 ('clf') "
        "of app 'app1' cannot take (it takes 'doubles') from stage 1 ('feat')"
    )
    assert not await async_redis.exists(KEYS.version("feat", "2"))
    # Registered aside, then made current: refused; feat stays on version 1.
    await ok(api.post("/admin/models", json={**strings, "set_current": False}), 201)
    body = {"version": "2"}
    await error(api.put("/admin/models/feat/current_version", json=body), 409, "conflict")
    assert (await ok(api.get("/admin/models/feat")))["current_version"] == "1"
    # A stage that pins version 1 does not follow the current version: allowed then.
    await put_pipeline(api, stage("feat:1"), stage("clf"))
    model = await ok(api.put("/admin/models/feat/current_version", json=body))
    assert model["current_version"] == "2"
    # A compatible (or undeclared) version may always become current.
    await ok(api.post("/admin/models", json={**CLF, "version": "2", "output_type": "floats"}), 201)
