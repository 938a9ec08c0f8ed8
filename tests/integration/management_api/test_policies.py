"""Selection policies of an app: registered with settings, changed live, refused when they
cannot apply, and the learned state (per app and per user) shown, kept, reset and
deleted with the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from management_frontend.state.policy import STALE, ArmFeedback
from management_frontend.state.records import App
from management_frontend.storage.store import Store
from model_container.protocol import InputType
from query_frontend.routing.feed import read_snapshot
from query_frontend.selection.learned_store import LearnedStateStore

from .helpers import (
    APP,
    KEYS,
    MODEL,
    error,
    feedback,
    learn,
    learned_keys,
    linked_app,
    ok,
    settled_keys,
)


async def test_an_app_is_registered_with_a_policy_and_its_settings_filled_in(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    plain = await ok(api.post("/admin/apps", json=APP), 201)
    assert (plain["policy"], plain["policy_params"]) == ("single", {"loss": "auto"})

    body = {**APP, "name": "app2", "policy": "exp3", "policy_params": {"eta": 0.5}}
    app = await ok(api.post("/admin/apps", json=body), 201)
    assert app["policy"] == "exp3"
    assert app["policy_params"] == {"eta": 0.5, "gamma": 0.1, "loss": "auto"}
    assert (await ok(api.get("/admin/apps/app2")))["policy_params"] == app["policy_params"]
    snap = await read_snapshot(async_redis, KEYS)
    assert snap.apps["app2"].policy_params == app["policy_params"]

    # No links exist at registration: split weights are taken as given.
    weights = {"m1:1": 90, "m2": 10}
    split = {**APP, "name": "app3", "policy": "split", "policy_params": {"weights": weights}}
    app = await ok(api.post("/admin/apps", json=split), 201)
    assert app["policy_params"] == {"weights": weights, "loss": "auto"}


BAD_POLICY_PARAMS: list[tuple[str, object, list[str]]] = [
    ("exp3", {"weights": {"m1": 1}}, ["policy 'exp3' takes no parameter 'weights'", "'eta'"]),
    ("single", {"eta": 0.1}, ["policy 'single' takes no parameter 'eta': it takes 'loss'"]),
    ("exp3", {"eta": 0}, ["eta must be > 0 and <= 10", "got 0"]),
    ("exp4", {"eta": "fast"}, ["eta must be a number, got 'fast'"]),
    ("exp3", {"gamma": 2}, ["gamma must be > 0 and <= 1", "got 2"]),
    ("exp4", {"loss": "hinge"}, ["loss 'hinge' is not known: use one of auto, zero_one"]),
    ("split", {"weights": {"m1": -1}}, ["the weight of 'm1' must be >= 0, got -1"]),
    ("split", {"weights": {"m1": 0}}, ["weights must give at least one arm a weight > 0"]),
    ("split", {"weights": [1, 2]}, ["weights must be a non-empty object of arm -> weight"]),
    ("split", {"weights": {"M1": 1}}, ["model name 'M1' is not a DNS-1123 label"]),
    ("split", {"weights": {"m1:1 0": 1}}, ["model version '1 0' is not valid"]),
]


@pytest.mark.parametrize(("policy", "params", "fragments"), BAD_POLICY_PARAMS)
async def test_bad_policy_settings_are_400_naming_the_setting(
    api: httpx.AsyncClient, policy: str, params: object, fragments: list[str]
) -> None:
    body = {**APP, "policy": policy, "policy_params": params}
    message = await error(api.post("/admin/apps", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message
    assert await ok(api.get("/admin/apps")) == []

    await ok(api.post("/admin/apps", json=APP), 201)
    put = api.put("/admin/apps/app1/policy", json={"policy": policy, "params": params})
    message = await error(put, 400, "invalid")
    for fragment in fragments:
        assert fragment in message
    assert (await ok(api.get("/admin/apps/app1")))["policy"] == "single"


BAD_POLICY_BODIES: list[tuple[object, list[str]]] = [
    ({}, ["field 'policy' is required"]),
    ({"policy": "weighted"}, ["policy 'weighted' is no longer offered: use 'split'"]),
    ({"policy": "exp3", "params": [1]}, ["params must be a JSON object, got [1] (a list)"]),
    ({"policy": "exp3", "reset_state": "yes"}, ["reset_state must be a JSON boolean", "'yes'"]),
    ({"policy": "exp3", "eta": 0.2}, ["field 'eta' is not accepted"]),
]


@pytest.mark.parametrize(("body", "fragments"), BAD_POLICY_BODIES)
async def test_bad_set_policy_body_is_400(
    api: httpx.AsyncClient, body: object, fragments: list[str]
) -> None:
    await ok(api.post("/admin/apps", json=APP), 201)
    message = await error(api.put("/admin/apps/app1/policy", json=body), 400, "invalid")
    for fragment in fragments:
        assert fragment in message


async def test_set_policy_changes_the_policy_of_a_live_app(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "single", "m1")
    before = await ok(api.get("/admin/apps/app1"))
    app = await ok(api.put("/admin/apps/app1/policy", json={"policy": "exp4"}))
    assert (app["policy"], app["policy_params"]) == ("exp4", {"eta": 0.1, "loss": "auto"})
    after = await ok(api.get("/admin/apps/app1"))
    # A new policy learns from scratch: a new epoch names its state.
    assert after["policy_epoch"] != before["policy_epoch"]
    assert after == {
        **before,
        "policy": "exp4",
        "policy_params": app["policy_params"],
        "policy_epoch": after["policy_epoch"],
        "pipeline": [
            {
                "arms": ["m1"],
                "policy": "exp4",
                "policy_params": app["policy_params"],
                "policy_epoch": after["policy_epoch"],
            }
        ],
    }
    assert (await read_snapshot(async_redis, KEYS)).apps["app1"].policy == "exp4"
    # Now a second model may be linked.
    await ok(api.post("/admin/models", json={**MODEL, "name": "m2"}), 201)
    assert await ok(api.post("/admin/apps/app1/links", json={"model_name": "m2"})) == ["m1", "m2"]


async def test_single_policy_on_an_app_with_two_links_is_409(api: httpx.AsyncClient) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    message = await error(
        api.put("/admin/apps/app1/policy", json={"policy": "single"}), 409, "conflict"
    )
    assert "app 'app1' has 2 links ('m1', 'm2')" in message
    assert "unlink all but one of them first" in message
    assert (await ok(api.get("/admin/apps/app1")))["policy"] == "exp3"

    await ok(api.delete("/admin/apps/app1/links/m2"), 204)
    app = await ok(api.put("/admin/apps/app1/policy", json={"policy": "single"}))
    assert app["policy"] == "single"


async def test_split_weights_must_name_linked_arms(api: httpx.AsyncClient) -> None:
    await linked_app(api, "exp3", "m1", "m2:1")
    bad = {"policy": "split", "params": {"weights": {"m1": 50, "m2": 50}}}
    message = await error(api.put("/admin/apps/app1/policy", json=bad), 400, "invalid")
    assert "the split weights name 'm2', which app 'app1' does not link" in message
    assert "(its links: 'm1', 'm2:1')" in message
    assert (await ok(api.get("/admin/apps/app1")))["policy"] == "exp3"

    good = {"policy": "split", "params": {"weights": {"m1": 90, "m2:1": 10}}}
    app = await ok(api.put("/admin/apps/app1/policy", json=good))
    assert app["policy_params"] == {"weights": {"m1": 90, "m2:1": 10}, "loss": "auto"}


async def test_changing_the_policy_forgets_what_the_old_one_learned(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, None, feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    await learn(async_redis, "u1", feedback(m1=(-0.5, 0.5), m2=(0.0, 0.0)))
    assert len(await learned_keys(async_redis)) == 2  # the app's and u1's
    assert (await ok(api.get("/admin/apps/app1/policy/state")))["updates"] == 2

    await ok(api.put("/admin/apps/app1/policy", json={"policy": "exp4"}))
    assert await settled_keys(async_redis, 0) == []
    state = await ok(api.get("/admin/apps/app1/policy/state"))
    assert state["updates"] == 0
    assert [a["updates"] for a in state["arms"].values()] == [0, 0]
    user = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert user["updates"] == 0


async def test_new_settings_for_the_same_policy_keep_what_it_learned_unless_reset(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, "u1", feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    learned = await ok(api.get("/admin/apps/app1/policy/state"))

    app = await ok(
        api.put("/admin/apps/app1/policy", json={"policy": "exp3", "params": {"eta": 0.5}})
    )
    assert app["policy_params"]["eta"] == 0.5
    kept = await ok(api.get("/admin/apps/app1/policy/state"))
    assert kept["updates"] == 1 and kept["params"]["eta"] == 0.5
    assert {a: s["log_weight"] for a, s in kept["arms"].items()} == {
        a: s["log_weight"] for a, s in learned["arms"].items()
    }

    reset = {"policy": "exp3", "params": {"eta": 0.5}, "reset_state": True}
    app = await ok(api.put("/admin/apps/app1/policy", json=reset))
    assert app["policy_params"]["eta"] == 0.5
    assert await settled_keys(async_redis, 0) == []
    assert (await ok(api.get("/admin/apps/app1/policy/state")))["updates"] == 0


async def test_policy_state_shows_each_arm_and_what_a_user_sees(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2:1")
    # Two messages for the app, one of them from user u1; an unlinked arm learned too.
    await learn(async_redis, None, feedback(m1=(0.0, 0.0), m2_1=(-1.0, 1.0)))
    await learn(async_redis, "u1", feedback(m1=(0.0, 0.0), m2_1=(-1.0, 1.0)))
    await learn(async_redis, None, feedback(old=(-2.0, 3.0)))

    state = await ok(api.get("/admin/apps/app1/policy/state"))
    assert {k: state[k] for k in ("app", "policy", "params", "uid", "updates")} == {
        "app": "app1",
        "policy": "exp3",
        "params": {"eta": 0.1, "gamma": 0.1, "loss": "auto"},
        "uid": None,
        "updates": 3,
    }
    arms = state["arms"]
    assert list(arms) == ["m1", "m2:1", "old"]
    assert arms["m1"]["probability"] > arms["m2:1"]["probability"] > 0
    assert arms["m1"]["probability"] + arms["m2:1"]["probability"] == pytest.approx(1.0)
    assert (arms["m2:1"]["updates"], arms["m2:1"]["mean_loss"]) == (2, 1.0)
    assert arms["m2:1"]["log_weight"] == pytest.approx(-2.0)
    assert (arms["m1"]["updates"], arms["m1"]["mean_loss"]) == (2, 0.0)
    assert "linked" not in arms["m1"]
    assert arms["old"] == {
        "probability": 0.0,
        "log_weight": -2.0,
        "updates": 1,
        "mean_loss": 3.0,
        "linked": False,
    }

    # u1 sees the app's state plus what their own feedback added.
    user = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert (user["uid"], user["updates"]) == ("u1", 4)
    assert user["arms"]["m2:1"]["updates"] == 3
    assert user["arms"]["m2:1"]["log_weight"] == pytest.approx(-3.0)
    assert user["arms"]["m1"]["probability"] > arms["m1"]["probability"]
    # A user without feedback of their own sees the app's state.
    stranger = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u2"}))
    assert {**stranger, "uid": None} == state


async def test_an_arm_first_learned_late_starts_where_feedback_said(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, None, {"m1": ArmFeedback(-40.0, 1.0)})
    # m2's first feedback starts it level with m1 (the frontend says where), then steps.
    await learn(async_redis, "u1", {"m2": ArmFeedback(-1.0, 1.0, start=-40.0)})
    await learn(async_redis, None, {"m2": ArmFeedback(-1.0, 1.0, start=123.0)})  # not again
    arms = (await ok(api.get("/admin/apps/app1/policy/state")))["arms"]
    assert arms["m2"]["log_weight"] == pytest.approx(-42.0)
    assert arms["m1"]["probability"] > arms["m2"]["probability"]
    user = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert user["arms"]["m2"]["log_weight"] == pytest.approx(-43.0)  # plus u1's own step


async def test_resetting_one_user_keeps_the_app_and_other_users(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    for uid in ("u1", "u2"):
        await learn(async_redis, uid, feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    u2_before = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u2"}))

    await ok(api.delete("/admin/apps/app1/policy/state", params={"uid": "u1"}), 204)
    epoch = await async_redis.hget(KEYS.app("app1"), "policy_epoch")
    assert not await async_redis.exists(KEYS.policy_state("app1", epoch, "u1"))
    assert await async_redis.exists(KEYS.policy_state("app1", epoch, "u2"))
    app_state = await ok(api.get("/admin/apps/app1/policy/state"))
    assert app_state["updates"] == 2  # the app keeps what u1's feedback taught it
    u1 = await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u1"}))
    assert {**u1, "uid": None} == app_state
    assert await ok(api.get("/admin/apps/app1/policy/state", params={"uid": "u2"})) == u2_before

    await ok(api.delete("/admin/apps/app1/policy/state"), 204)
    assert await settled_keys(async_redis, 0) == []
    assert (await ok(api.get("/admin/apps/app1/policy/state")))["updates"] == 0


async def test_deleting_an_app_deletes_what_its_policy_learned(
    api: httpx.AsyncClient, async_redis: aioredis.Redis
) -> None:
    await linked_app(api, "exp3", "m1", "m2")
    await learn(async_redis, "u1", feedback(m1=(0.0, 0.0), m2=(-1.0, 1.0)))
    epoch = await async_redis.hget(KEYS.app("app1"), "policy_epoch")
    await ok(api.delete("/admin/apps/app1"), 204)
    assert await settled_keys(async_redis, 0) == []
    assert await async_redis.keys(f"{KEYS.app('app1')}*") == []
    # Feedback in flight when the app went is not counted anywhere.
    late = await LearnedStateStore(async_redis, KEYS).record(
        "app1", epoch, "u1", feedback(m1=(-1.0, 1.0))
    )
    assert late == STALE and await learned_keys(async_redis) == []
    # A new app of the same name starts from nothing, even from a leftover record.
    await async_redis.hset(KEYS.policy_state("app1", "0ld", "u9"), "w:m1", "-1")
    await ok(api.post("/admin/apps", json={**APP, "policy": "exp3"}), 201)
    assert await settled_keys(async_redis, 0) == []


class HeldScans(aioredis.Redis):
    """A client whose SCANs wait for ``go``: its background clean-ups start when told."""

    go: asyncio.Event

    async def scan_iter(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        await self.go.wait()
        async for key in super().scan_iter(*args, **kwargs):
            yield key


async def test_an_app_added_again_keeps_what_it_learns_while_the_old_state_goes(
    redis_url: str, async_redis: aioredis.Redis
) -> None:
    held = HeldScans.from_url(redis_url, decode_responses=True, socket_timeout=5)
    held.go = asyncio.Event()
    store = Store(held, KEYS)
    app = App(
        name="app1",
        input_type=InputType.DOUBLES,
        default_output=-1.0,
        slo_micros=100_000,
        policy="exp3",
    )
    try:
        old = await store.add_app(app)
        # Enough users that the clean-up unlinks them in several batches.
        async with async_redis.pipeline(transaction=False) as pipe:
            for i in range(1200):
                pipe.hset(KEYS.policy_state("app1", old.policy_epoch, f"u{i}"), "updates", "1")
            await pipe.execute()
        await store.delete_app("app1")
        new = await store.add_app(app)
        await learn(async_redis, "u1", feedback(m1=(-1.0, 1.0)))
        # Every clean-up scans only now, and so finds the new app's keys with the old ones.
        held.go.set()
        await store.wait_for_cleanups()
    finally:
        await held.aclose()
    assert await learned_keys(async_redis) == [
        KEYS.policy_state("app1", new.policy_epoch),
        KEYS.policy_state("app1", new.policy_epoch, "u1"),
    ]


async def test_policy_endpoints_of_unknown_apps_are_404(api: httpx.AsyncClient) -> None:
    cases: list[Awaitable[httpx.Response]] = [
        api.put("/admin/apps/nope/policy", json={"policy": "exp3"}),
        api.get("/admin/apps/nope/policy/state"),
        api.get("/admin/apps/nope/policy/state", params={"uid": "u1"}),
        api.delete("/admin/apps/nope/policy/state"),
        api.delete("/admin/apps/nope/policy/state", params={"uid": "u1"}),
    ]
    for request in cases:
        assert "app 'nope' does not exist" in await error(request, 404, "not_found")
