"""Several models per app on the embedded default: split, exp3 and exp4 end to end.

Real redis-server, both frontends and every model replica as local processes; queries
and feedback over HTTP, as an application sends them. One cluster serves the module
(each test has its own app and model names); the restart test starts its own.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from clusters import started
from polling import eventually

from admin import Connection, LocalContainerManager
from admin.deployers.python import deploy_python_closure

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def conn(
    tmp_path_factory: pytest.TempPathFactory, local_manager: Callable[..., LocalContainerManager]
) -> Iterator[Connection]:
    with started(local_manager(tmp_path_factory.mktemp("cluster"))) as c:
        yield c


# One client, its connections kept alive: a new connection per request costs ~40 ms of
# httpx setup, which would make these tests slow, not more real.
HTTP = httpx.Client(timeout=10)


@pytest.fixture(scope="module", autouse=True)
def _close_http() -> Iterator[None]:
    yield
    HTTP.close()


def post(conn: Connection, app: str, verb: str, body: Any) -> dict[str, Any]:
    r = HTTP.post(f"http://{conn.get_query_addr()}/{app}/{verb}", json=body)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


# ---------------------------------------------------------------------- exp3


def classifiers() -> dict[str, Callable[[int], int]]:
    """Label of input i is i % 2: "good" is right on 9 inputs in 10, the others on half."""

    def good(i: int) -> int:
        return i % 2 if i % 10 else 1 - i % 2

    def half(i: int) -> int:
        return (i // 2) % 2

    def coin(i: int) -> int:
        return ((i * 2654435761) >> 13) % 2

    return {"good": good, "half": half, "coin": coin}


def deploy_classifiers(conn: Connection, prefix: str) -> None:
    for name, rule in classifiers().items():
        deploy_python_closure(
            conn,
            f"{prefix}-{name}",
            "1",
            "ints",
            lambda xs, rule=rule: [rule(int(x[0])) for x in xs],
        )


def test_exp3_learns_to_send_most_queries_to_the_model_that_is_right(conn: Connection) -> None:
    inputs = range(1000, 1300)
    rules = classifiers()
    accuracy = {n: sum(f(i) == i % 2 for i in inputs) / len(inputs) for n, f in rules.items()}
    assert accuracy["good"] == 0.9 and all(0.4 < accuracy[n] < 0.6 for n in ("half", "coin"))

    conn.register_application("bandit", "ints", -1, 2_000_000, policy="exp3")
    deploy_classifiers(conn, "b")
    for name in rules:
        conn.link_model_to_app("bandit", f"b-{name}")
    for i in inputs:  # a few hundred feedback messages
        answer = post(conn, "bandit", "update", {"input": [i], "label": i % 2})
        assert len(answer["models"]) == 1 and set(answer["losses"]) == set(answer["models"])

    served = Counter()
    for i in range(5000, 5400):
        body = post(conn, "bandit", "predict", {"input": [i]})
        assert body["default"] is False
        served[body["models"][0]] += 1
    assert served["b-good:1"] / sum(served.values()) > 0.7, served

    state = conn.get_policy_state("bandit")
    assert state["updates"] == 300
    arms = state["arms"]
    assert arms["b-good"]["probability"] > 0.7
    assert arms["b-good"]["mean_loss"] < arms["b-half"]["mean_loss"]

    # A reset reaches the query frontend live: it starts again from even odds.
    conn.reset_policy_state("bandit")
    assert conn.get_policy_state("bandit")["updates"] == 0

    def forgotten() -> bool:
        seen = Counter(
            post(conn, "bandit", "predict", {"input": [i]})["models"][0] for i in range(300)
        )
        return seen["b-good:1"] < 150

    eventually(forgotten, what="the frontend forgot what exp3 learned")


def test_feedback_that_cannot_be_used_gets_a_specific_error(conn: Connection) -> None:
    conn.register_application("picky", "ints", -1, 2_000_000, policy="exp3")
    deploy_python_closure(conn, "picky-m", "1", "ints", lambda xs: [0.5 for _ in xs])
    conn.link_model_to_app("picky", "picky-m")
    url = f"http://{conn.get_query_addr()}/picky/update"
    cases = [
        ({"input": [1]}, 400, 'no "label" field'),
        ({"label": 1}, 400, 'no "input" field'),
        ({"input": ["x"], "label": 1}, 400, "list of integers"),
        ({"input": [1], "label": 1, "uid": ""}, 400, '"uid" must be a non-empty string'),
        ({"input": [1], "label": [1.0, 2.0]}, 400, "same shape"),
        ({"input": [1], "label": 1e200}, 400, "not a finite number"),
        ({"input": [1], "label": 1, "feedback_id": 7}, 400, '"feedback_id" must be a string'),
    ]
    for body, status, words in cases:
        r = HTTP.post(url, json=body)
        assert r.status_code == status, r.text
        assert words in r.json()["message"], r.text
    r = HTTP.post(f"http://{conn.get_query_addr()}/nobody/update", json={})
    assert r.status_code == 404, r.text
    assert r.json()["message"] == "no application named 'nobody' is registered"
    assert conn.get_policy_state("picky")["updates"] == 0  # nothing was learned from them


def test_a_retried_feedback_with_its_id_counts_once(conn: Connection) -> None:
    conn.register_application("retry", "ints", -1, 2_000_000, policy="exp3")
    deploy_python_closure(conn, "retry-m", "1", "ints", lambda xs: [1 for _ in xs])
    conn.link_model_to_app("retry", "retry-m")
    body = {"input": [3], "label": 0, "feedback_id": "order-17"}
    first = post(conn, "retry", "update", body)
    again = post(conn, "retry", "update", body)
    assert "duplicate" not in first and again["duplicate"] is True
    assert first["losses"] == again["losses"] == {"retry-m:1": 1.0}
    post(conn, "retry", "update", {**body, "feedback_id": "order-18"})
    assert conn.get_policy_state("retry")["updates"] == 2


# ---------------------------------------------------------------------- exp4


def regressors() -> dict[str, Callable[[float], float]]:
    """Truth is 3x + 1; each model adds its own noise (a fixed function of x)."""

    def noisy(seed: int, sigma: float) -> Callable[[float], float]:
        def f(x: float) -> float:
            return 3 * x + 1 + random.Random(f"{seed}:{x!r}").gauss(0, sigma)

        return f

    return {"r1": noisy(1, 1.0), "r2": noisy(2, 1.2), "r3": noisy(3, 1.5)}


def test_exp4_ensemble_beats_the_best_single_regressor(conn: Connection) -> None:
    models = regressors()
    conn.register_application("blend", "doubles", 0.0, 2_000_000, policy="exp4")
    for name, f in models.items():
        deploy_python_closure(conn, name, "1", "doubles", lambda xs, f=f: [f(x[0]) for x in xs])
        conn.link_model_to_app("blend", name)
    rng = random.Random(11)
    for _ in range(300):
        x = round(rng.uniform(-10, 10), 6)
        answer = post(conn, "blend", "update", {"input": [x], "label": 3 * x + 1})
        assert sorted(answer["models"]) == ["r1:1", "r2:1", "r3:1"]

    ensemble_error = 0.0
    single_error = dict.fromkeys(models, 0.0)
    xs = [round(rng.uniform(-10, 10), 6) for _ in range(300)]
    for x in xs:
        body = post(conn, "blend", "predict", {"input": [x]})
        assert sorted(body["models"]) == ["r1:1", "r2:1", "r3:1"] and "partial" not in body
        truth = 3 * x + 1
        ensemble_error += (body["output"] - truth) ** 2
        for name, f in models.items():
            single_error[name] += (f(x) - truth) ** 2
    assert ensemble_error < min(single_error.values()), (ensemble_error, single_error)
    weights = {a: v["probability"] for a, v in conn.get_policy_state("blend")["arms"].items()}
    assert weights["r1"] > weights["r3"]


def test_an_ensemble_with_a_model_down_answers_partial_naming_it(conn: Connection) -> None:
    import psutil

    conn.register_application("trio", "doubles", "fallback", 500_000, policy="exp4")
    for name, value in (("t1", 1.0), ("t2", 2.0), ("t3", 3.0)):
        deploy_python_closure(conn, name, "1", "doubles", lambda xs, v=value: [v + 0.5 for _ in xs])
        conn.link_model_to_app("trio", name)
    conn.set_app_cache("trio", False)
    whole = post(conn, "trio", "predict", {"input": [0.0]})
    assert sorted(whole["models"]) == ["t1:1", "t2:1", "t3:1"] and "partial" not in whole
    assert whole["output"] == pytest.approx(2.5)

    victim = next(r for r in conn.get_all_model_replicas(verbose=True) if r["model_name"] == "t3")

    def one(i: int) -> dict[str, Any]:
        return post(conn, "trio", "predict", {"input": [float(i)]})

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(one, i) for i in range(300)]
        eventually(futures[50].done, what="the first queries answered")  # then the kill
        psutil.Process(victim["pid"]).kill()
        answers = [f.result(timeout=30) for f in futures]
    # Every query was answered by the models that were up, none got the default.
    assert all(a["default"] is False for a in answers)
    partial = [a for a in answers if a.get("partial")]
    assert partial, "no answer was flagged partial after the kill"
    for a in partial:
        assert a["missing"] == ["t3:1"] and sorted(a["models"]) == ["t1:1", "t2:1"]
        assert a["output"] == pytest.approx(2.0) and "t3:1" in a["partial_explanation"]
    after = post(conn, "trio", "predict", {"input": [7.0]})
    assert after["partial"] is True and after["missing"] == ["t3:1"]


# ---------------------------------------------------------------------- split


def test_split_routes_by_weight_and_keeps_users_on_their_arm(conn: Connection) -> None:
    conn.register_application("canary", "doubles", -1, 2_000_000, policy="split")
    deploy_python_closure(conn, "svc", "1", "doubles", lambda xs: ["v1"] * len(xs))
    deploy_python_closure(conn, "svc", "2", "doubles", lambda xs: ["v2"] * len(xs))
    conn.link_model_to_app("canary", "svc", version="1")
    conn.link_model_to_app("canary", "svc", version="2")
    conn.set_selection_policy("canary", "split", weights={"svc:1": 90, "svc:2": 10})

    def shares() -> Counter[str]:
        seen: Counter[str] = Counter()
        for start in range(0, 2000, 100):
            batch = [[float(start + i)] for i in range(100)]
            body = post(conn, "canary", "predict", {"input_batch": batch})
            for p in body["batch_predictions"]:
                assert p["output"] == "v" + p["models"][0].split(":")[1]
                seen[p["models"][0]] += 1
        return seen

    seen = shares()
    assert 140 <= seen["svc:2"] <= 260, seen  # 10% +- 3% of 2000

    users = [f"user-{i}" for i in range(60)]

    def arm_of(uid: str) -> str:
        return str(post(conn, "canary", "predict", {"input": [1.0], "uid": uid})["models"][0])

    first = {u: arm_of(u) for u in users}
    assert all(arm_of(u) == first[u] for u in users for _ in range(3))

    # Weights change live; users already on the canary stay on it as it grows.
    conn.set_selection_policy("canary", "split", weights={"svc:1": 50, "svc:2": 50})
    seen = shares()
    assert 880 <= seen["svc:2"] <= 1120, seen
    assert all(arm_of(u) == "svc:2" for u in users if first[u] == "svc:2")


# ---------------------------------------------------------------------- persistence


def test_learned_state_survives_a_full_restart(
    tmp_path: Path,
    cluster_ports: Callable[[], dict[str, int]],
    local_manager: Callable[..., LocalContainerManager],
) -> None:
    ports = cluster_ports()
    first = Connection(local_manager(tmp_path / "cluster", ports))
    first.start()
    try:
        first.register_application("remember", "ints", -1, 2_000_000, policy="exp3")
        deploy_classifiers(first, "p")
        for name in classifiers():
            first.link_model_to_app("remember", f"p-{name}")
        for i in range(2000, 2300):
            uid = "alice" if i % 3 == 0 else None
            body: dict[str, Any] = {"input": [i], "label": i % 2}
            if uid:
                body["uid"] = uid
            post(first, "remember", "update", body)
        before = first.get_policy_state("remember")
        before_alice = first.get_policy_state("remember", uid="alice")
    finally:
        first.stop_all()

    second = Connection(local_manager(tmp_path / "cluster", ports))
    second.start()
    try:
        assert second.get_policy_state("remember") == before
        assert second.get_policy_state("remember", uid="alice") == before_alice
        assert before_alice["updates"] == 300 + 100
        # The restarted query frontend routes by what was learned before the restart.
        served: Counter[str] = Counter()

        def good_share() -> float:
            for i in range(6000, 6200):
                served[post(second, "remember", "predict", {"input": [i]})["models"][0]] += 1
            return served["p-good:1"] / sum(served.values())

        eventually(lambda: good_share() > 0.7, what="the restarted frontend uses the state")
        post(second, "remember", "update", {"input": [7], "label": 1})
        assert second.get_policy_state("remember")["updates"] == 301
    finally:
        second.stop_all()
