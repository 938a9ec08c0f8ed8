"""Pipelines attacked as a user, an operator and an attacker would: a review's findings.

Real redis-server, both frontends and every model replica as local processes (one
cluster for the module; each test has its own app and model names).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from clusters import started
from polling import eventually

from admin import Connection, LocalContainerManager
from admin.container_managers._credentials import LocalCredentialStore
from admin.deployers.python import deploy_python_closure
from admin.exceptions import ConflictError, InvalidRequestError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

HTTP = httpx.Client(timeout=10)


@pytest.fixture(scope="module")
def manager(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> LocalContainerManager:
    cm: LocalContainerManager = local_manager(tmp_path_factory.mktemp("review"))
    return cm


@pytest.fixture(scope="module")
def conn(manager: LocalContainerManager) -> Iterator[Connection]:
    with started(manager) as c:
        yield c


@pytest.fixture(scope="module")
def store(manager: LocalContainerManager, conn: Connection) -> Iterator[redis.Redis]:
    creds = LocalCredentialStore(manager.data_dir).load()
    assert creds is not None
    client = redis.Redis(
        host="127.0.0.1", port=manager.redis_port, password=creds.redis_password, socket_timeout=5
    )
    yield client
    client.close()


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


def post(conn: Connection, app: str, body: Any, verb: str = "predict") -> httpx.Response:
    return HTTP.post(f"http://{conn.get_query_addr()}/{app}/{verb}", json=body)


def test_a_corrupted_stages_field_breaks_only_its_own_app(
    conn: Connection, store: redis.Redis
) -> None:
    deploy_python_closure(
        conn, "cr-id", "1", "doubles", lambda xs: [[x[0] + 1.0] for x in xs], output_type="doubles"
    )
    conn.register_application("cr-bad", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("cr-bad", ["cr-id", "cr-id"])
    assert post(conn, "cr-bad", {"input": [1.0]}).json()["output"] == [3.0]

    store.hset("schooner:app:cr-bad", "stages", "{not json")
    # Any later change: an app registered after the corruption must still be served.
    conn.register_application("cr-new", "doubles", -1, 2_000_000)
    conn.link_model_to_app("cr-new", "cr-id")
    eventually(
        lambda: post(conn, "cr-new", {"input": [1.0]}).status_code == 200,
        what="an app registered after another app's stages were corrupted",
        timeout=10,
    )
    assert post(conn, "cr-new", {"input": [1.0]}).json()["output"] == [2.0]

    # The broken app is not silently served as its first stage alone: its default,
    # saying which stage cannot be read; the admin API shows that stage without arms.
    bad = post(conn, "cr-bad", {"input": [1.0]}).json()
    assert bad["default"] is True and bad["output"] == -1, bad
    assert "stage 2" in bad["default_explanation"]
    assert "cannot be read" in bad["default_explanation"]
    assert [s["arms"] for s in conn.get_app_pipeline("cr-bad")] == [["cr-id"], []]
    # Feedback cannot teach it: a 409 as for an app without a model, not a 503 asking
    # for a retry that cannot help.
    learn = post(conn, "cr-bad", {"input": [1.0], "label": 1.0}, "update")
    assert learn.status_code == 409, learn.text
    assert "stage 2" in learn.json()["message"]

    # The operator can read it and set it right through the API.
    conn.set_app_pipeline("cr-bad", ["cr-id", "cr-id"])
    eventually(
        lambda: post(conn, "cr-bad", {"input": [1.0]}).json().get("output") == [3.0],
        what="the pipeline set again",
        timeout=10,
    )


def test_a_stage_answering_the_wrong_number_of_outputs_is_an_error_naming_it(
    conn: Connection,
) -> None:
    deploy_python_closure(
        conn, "wc-a", "1", "doubles", lambda xs: [[x[0]] for x in xs], output_type="doubles"
    )
    deploy_python_closure(conn, "wc-b", "1", "doubles", lambda xs: [])
    conn.register_application("wcount", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("wcount", ["wc-a", "wc-b"])
    r = post(conn, "wcount", {"input": [1.0]})
    assert r.status_code == 500, r.text
    assert "stage 2" in r.json()["message"]


def test_a_label_the_loss_cannot_use_stores_nothing_in_any_stage(conn: Connection) -> None:
    deploy_python_closure(
        conn, "lb-a", "1", "doubles", lambda xs: [[x[0]] for x in xs], output_type="doubles"
    )
    deploy_python_closure(
        conn, "lb-b", "1", "doubles", lambda xs: [[x[0] * 2] for x in xs], output_type="doubles"
    )
    deploy_python_closure(conn, "lb-c", "1", "doubles", lambda xs: [x[0] + 1.0 for x in xs])
    conn.register_application("label", "doubles", -1, 2_000_000)
    exp4 = {"arms": ["lb-a", "lb-b"], "policy": "exp4"}
    conn.set_app_pipeline("label", [exp4, {"arms": ["lb-c"], "policy": "exp3"}])
    r = post(conn, "label", {"input": [1.0], "label": {"a": [1]}}, "update")
    assert r.status_code == 400, r.text
    for stage in (1, 2):
        assert conn.get_policy_state("label", stage=stage)["updates"] == 0

    ok = post(conn, "label", {"input": [1.0], "label": 2.0, "feedback_id": "f1"}, "update")
    assert ok.status_code == 200, ok.text
    again = post(conn, "label", {"input": [1.0], "label": 2.0, "feedback_id": "f1"}, "update")
    assert again.status_code == 200 and again.json().get("duplicate") is True, again.text
    for stage in (1, 2):
        assert conn.get_policy_state("label", stage=stage)["updates"] == 1


def test_bad_stage_numbers_are_refused_by_the_client_and_the_api(conn: Connection) -> None:
    deploy_python_closure(conn, "sn-a", "1", "doubles", lambda xs: [x[0] for x in xs])
    conn.register_application("stageno", "doubles", -1, 2_000_000)
    conn.link_model_to_app("stageno", "sn-a")
    for stage in (0, 2, 9, -1):
        with pytest.raises(InvalidRequestError):
            conn.set_selection_policy("stageno", "exp3", stage=stage)
        with pytest.raises(InvalidRequestError):
            conn.get_policy_state("stageno", stage=stage)
        with pytest.raises(InvalidRequestError):
            conn.reset_policy_state("stageno", stage=stage)
    assert conn.get_app_pipeline("stageno")[0]["policy"] == "single"


def test_an_exp4_arm_whose_way_through_the_later_stages_fails_is_left_out_of_feedback(
    conn: Connection,
) -> None:
    # Stage 1 (exp4) combines [1.0] and [-1.0] into [0.0], which stages 2 and 3 answer;
    # 'dx-b''s own [-1.0] leads stage 2 to an output stage 3 cannot take: that arm finds
    # no answer through the later stages and is left out, as docs/pipelines.md says,
    # instead of failing the whole update with a 502.
    deploy_python_closure(conn, "dx-a", "1", "doubles", lambda xs: [[1.0] for _ in xs])
    deploy_python_closure(conn, "dx-b", "1", "doubles", lambda xs: [[-1.0] for _ in xs])
    deploy_python_closure(
        conn, "dx-mid", "1", "doubles", lambda xs: [[x[0]] if x[0] >= 0 else "bad" for x in xs]
    )
    deploy_python_closure(conn, "dx-out", "1", "doubles", lambda xs: [x[0] + 1.0 for x in xs])
    conn.register_application("downstream", "doubles", -1, 2_000_000)
    conn.set_app_pipeline(
        "downstream", [{"arms": ["dx-a", "dx-b"], "policy": "exp4"}, "dx-mid", "dx-out"]
    )
    assert post(conn, "downstream", {"input": [5.0]}).json()["output"] == 1.0

    r = post(conn, "downstream", {"input": [5.0], "label": 1.0}, "update")
    assert r.status_code == 200, r.text
    first = r.json()["stages"][0]
    assert first["models"] == ["dx-a:1", "dx-b:1"]
    assert list(first["losses"]) == ["dx-a:1"]
    assert conn.get_policy_state("downstream", stage=1)["updates"] == 1


def test_deep_and_huge_outputs_between_stages_get_a_clear_answer(conn: Connection) -> None:
    def deep(xs: list[Any]) -> list[Any]:
        out: list[Any] = []
        for _ in xs:
            v: Any = [1.0]
            for _ in range(3000):
                v = [v]
            out.append(v)
        return out

    deploy_python_closure(conn, "dp-deep", "1", "doubles", deep)
    deploy_python_closure(conn, "dp-big", "1", "doubles", lambda xs: ["x" * 5_000_000 for _ in xs])
    deploy_python_closure(conn, "dp-len", "1", "strings", lambda xs: [float(len(x)) for x in xs])
    deploy_python_closure(conn, "dp-sum", "1", "doubles", lambda xs: [sum(x) for x in xs])
    conn.register_application("deep", "doubles", -1, 5_000_000)
    conn.set_app_pipeline("deep", ["dp-deep", "dp-sum"])
    r = post(conn, "deep", {"input": [1.0]})
    assert r.status_code in (500, 502), r.text
    assert "stage 1" in r.json()["message"]

    conn.register_application("huge", "doubles", -1, 5_000_000)
    conn.set_app_pipeline("huge", ["dp-big", "dp-len"])
    r = post(conn, "huge", {"input": [1.0]})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["output"] == 5_000_000.0


def test_deploying_a_version_the_next_stage_cannot_take_is_refused_and_leaves_nothing(
    conn: Connection,
) -> None:
    deploy_python_closure(
        conn, "rv-feat", "1", "doubles", lambda xs: [[x[0]] for x in xs], output_type="doubles"
    )
    deploy_python_closure(conn, "rv-clf", "1", "doubles", lambda xs: [x[0] * 2 for x in xs])
    conn.register_application("roll", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("roll", ["rv-feat", "rv-clf"])
    with pytest.raises(ConflictError) as refused:
        deploy_python_closure(
            conn, "rv-feat", "2", "doubles", lambda xs: ["s" for _ in xs], output_type="strings"
        )
    assert "stage 2" in str(refused.value)
    model = conn.get_model("rv-feat")
    assert model is not None
    assert model["current_version"] == "1" and model["versions"] == ["1"], model
    replicas = conn.get_all_model_replicas(verbose=True)
    assert not [r for r in replicas if "rv-feat:2" in str(r)], replicas
    assert post(conn, "roll", {"input": [2.0]}).json()["output"] == 4.0


def test_unregistering_a_version_a_later_stage_needs_is_refused_and_keeps_serving(
    conn: Connection,
) -> None:
    deploy_python_closure(
        conn, "ur-a", "1", "doubles", lambda xs: [[x[0]] for x in xs], output_type="doubles"
    )
    deploy_python_closure(conn, "ur-b", "1", "doubles", lambda xs: [x[0] * 3 for x in xs])
    conn.register_application("unreg", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("unreg", ["ur-a", "ur-b"])
    assert post(conn, "unreg", {"input": [2.0]}).json()["output"] == 6.0
    with pytest.raises(ConflictError):
        conn.unregister_model_version("ur-b", "1")
    # Refused: the pipeline still answers, its stage 2 replicas untouched.
    time.sleep(1.0)
    body = post(conn, "unreg", {"input": [5.0]}).json()  # not a cached answer
    assert body["default"] is False and body["output"] == 15.0, body


def test_each_stages_learned_state_is_kept_renewed_reset_and_cleaned_up_by_the_rules(
    conn: Connection, store: redis.Redis
) -> None:
    deploy_python_closure(
        conn, "ls-a", "1", "doubles", lambda xs: [[x[0]] for x in xs], output_type="doubles"
    )
    deploy_python_closure(conn, "ls-b", "1", "doubles", lambda xs: [x[0] for x in xs])
    deploy_python_closure(conn, "ls-c", "1", "doubles", lambda xs: [x[0] + 1 for x in xs])
    conn.register_application("learn", "doubles", -1, 2_000_000)
    exp3 = {"arms": ["ls-b", "ls-c"], "policy": "exp3"}
    conn.set_app_pipeline("learn", [{"arms": ["ls-a"], "policy": "exp3"}, exp3])
    for i in range(3):
        body = {"input": [float(i)], "label": float(i), "uid": "u1", "feedback_id": f"x{i}"}
        assert post(conn, "learn", body, "update").status_code == 200
    assert [conn.get_policy_state("learn", stage=s)["updates"] for s in (1, 2)] == [3, 3]
    epochs = [s["policy_epoch"] for s in conn.get_app_pipeline("learn")]

    # Same policies, other settings: both stages keep what they learned.
    conn.set_app_pipeline("learn", [{"arms": ["ls-a"], "policy": "exp3"}, {**exp3, "eta": 0.5}])
    assert [s["policy_epoch"] for s in conn.get_app_pipeline("learn")] == epochs
    assert [conn.get_policy_state("learn", stage=s)["updates"] for s in (1, 2)] == [3, 3]
    # A retried feedback id still counts once per stage.
    body = {"input": [0.0], "label": 0.0, "feedback_id": "x0"}
    assert post(conn, "learn", body, "update").json().get("duplicate") is True

    # Stage 2 alone forgets; stage 1 keeps.
    conn.reset_policy_state("learn", stage=2)
    assert [conn.get_policy_state("learn", stage=s)["updates"] for s in (1, 2)] == [3, 0]
    renewed = [s["policy_epoch"] for s in conn.get_app_pipeline("learn")]
    assert renewed[0] == epochs[0] and renewed[1] != epochs[1]

    # Another policy at stage 2: a new epoch; the old ones' keys are cleaned up.
    conn.set_app_pipeline("learn", ["ls-a", {"arms": ["ls-b", "ls-c"], "policy": "exp4"}])
    now = [s["policy_epoch"] for s in conn.get_app_pipeline("learn")]
    assert epochs[0] not in now and renewed[1] not in now

    def old_keys() -> list[bytes]:
        return [
            k
            for e in (epochs[0], epochs[1], renewed[1])
            for k in store.scan_iter(match=f"schooner:app:learn:policy:{e}*")
        ]

    eventually(lambda: not old_keys(), what="the old epochs' learned state deleted", timeout=10)
    assert [conn.get_policy_state("learn", stage=s)["updates"] for s in (1, 2)] == [0, 0]
    assert post(conn, "learn", {"input": [4.0], "label": 4.0}, "update").status_code == 200
    assert [conn.get_policy_state("learn", stage=s)["updates"] for s in (1, 2)] == [1, 1]


def test_v2_metadata_of_a_pipeline_offers_no_version_to_pin(conn: Connection) -> None:
    deploy_python_closure(
        conn, "vm-a", "1", "doubles", lambda xs: [[x[0]] for x in xs], output_type="doubles"
    )
    deploy_python_closure(
        conn, "vm-a", "2", "doubles", lambda xs: [[x[0]] for x in xs], output_type="doubles"
    )
    deploy_python_closure(conn, "vm-b", "1", "doubles", lambda xs: [x[0] for x in xs])
    conn.register_application("vmeta", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("vmeta", ["vm-a", "vm-b"])
    addr = conn.get_query_addr()
    meta = HTTP.get(f"http://{addr}/v2/models/vmeta").json()
    assert meta["parameters"]["models"] == ["vm-a:2", "vm-b:1"]
    # Every pin of a pipeline is refused: the metadata must not offer stage 1's versions.
    assert meta["versions"] == [], meta
    pinned = HTTP.post(
        f"http://{addr}/v2/models/vmeta/versions/1/infer",
        json={"inputs": [{"name": "input", "datatype": "FP64", "shape": [1, 1], "data": [1.0]}]},
    )
    assert pinned.status_code == 400


def test_a_slow_arm_of_an_exp4_first_stage_leaves_the_next_stage_time(conn: Connection) -> None:
    def slow(xs: list[Any]) -> list[Any]:
        time.sleep(2.0)
        return [[x[0]] for x in xs]

    deploy_python_closure(conn, "sa-fast", "1", "doubles", lambda xs: [[x[0]] for x in xs])
    deploy_python_closure(conn, "sa-slow", "1", "doubles", slow)
    deploy_python_closure(conn, "sa-out", "1", "doubles", lambda xs: [x[0] * 2 for x in xs])
    conn.register_application("slowarm", "doubles", -1, 500_000)
    conn.set_app_pipeline("slowarm", [{"arms": ["sa-fast", "sa-slow"], "policy": "exp4"}, "sa-out"])
    body = post(conn, "slowarm", {"input": [3.0]}).json()
    assert body["default"] is False, body
    assert body["output"] == 6.0 and body.get("partial") is True, body


def test_an_exp4_stage_whose_arms_are_all_slow_is_named_in_the_default(
    conn: Connection,
) -> None:
    # No arm answers by the stage's share of the time: it waits on to the deadline, and
    # the default names stage 1, which was late (stage 2 is never asked).
    def slow(xs: list[Any]) -> list[Any]:
        time.sleep(2.0)
        return [[x[0]] for x in xs]

    deploy_python_closure(conn, "nt-slow-a", "1", "doubles", slow)
    deploy_python_closure(conn, "nt-slow-b", "1", "doubles", slow)
    deploy_python_closure(conn, "nt-out", "1", "doubles", lambda xs: [x[0] * 2 for x in xs])
    conn.register_application("notime", "doubles", -1, 500_000)
    conn.set_app_pipeline(
        "notime", [{"arms": ["nt-slow-a", "nt-slow-b"], "policy": "exp4"}, "nt-out"]
    )
    body = post(conn, "notime", {"input": [3.0]}).json()
    assert body["default"] is True, body
    why = body["default_explanation"]
    assert why.startswith("stage 1 ("), why
    assert "stage 2" not in why, why


def test_the_query_client_raises_an_output_the_next_stage_refused_as_a_prediction_error(
    conn: Connection,
) -> None:
    from admin import PredictionError, QueryClient

    deploy_python_closure(conn, "qe-a", "1", "doubles", lambda xs: ["words" for _ in xs])
    deploy_python_closure(conn, "qe-b", "1", "doubles", lambda xs: [x[0] for x in xs])
    conn.register_application("qerr", "doubles", -1, 2_000_000)
    conn.set_app_pipeline("qerr", ["qe-a", "qe-b"])
    client = QueryClient(conn.get_query_addr())
    try:
        with pytest.raises(PredictionError) as failed:
            client.predict("qerr", [1.0])
    finally:
        client.close()
    assert failed.value.status_code == 502
    assert failed.value.code == "pipeline_output_rejected"
    assert "stage 2" in str(failed.value)
