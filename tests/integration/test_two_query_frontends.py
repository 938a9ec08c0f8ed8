"""One model replica behind two real query frontends, as on Kubernetes.

Real Redis (the session's redis-server), a real ``python -m management_frontend`` that
registers the app, model and link, two real ``python -m query_frontend`` processes on
free ports, and one ``python -m model_container`` started with both RPC addresses.
Each frontend must answer predictions from the one replica. Waits poll a condition
with a deadline; nothing asserts how long anything took.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from credentials import ClusterSecrets, make_cluster_secrets
from polling import eventually
from ports import free_port
from spawning import Spawner

from model_container import write_closure_bundle
from model_container.bundle import bundle_digest
from model_container.protocol import InputType

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

STARTUP_S = 60.0
STARTING = (httpx.HTTPError,)  # a process still starting refuses connections


def make_model() -> Callable[[Any], Any]:
    def model(xs: Any) -> Any:
        return [float(sum(x)) for x in xs]

    return model


@pytest.fixture
def secrets(tmp_path: Path) -> ClusterSecrets:
    return make_cluster_secrets(tmp_path)


@pytest.fixture
def spawn(
    tmp_path: Path, secrets: ClusterSecrets
) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start ``python ARGV``: each process gets the cluster's credentials (``secrets``), the
    replicas' directory if it is a model container, the frontends' otherwise."""
    spawner = Spawner(tmp_path)

    def start(name: str, *argv: str) -> subprocess.Popen[bytes]:
        directory = secrets.replica_dir if "model_container" in argv else secrets.frontend_dir
        return spawner(name, *argv, env={"SCHOONER_SECRETS_DIR": str(directory)})

    yield start
    spawner.stop()


def start_control_and_two_frontends(
    redis_url: str, spawn: Callable[..., subprocess.Popen[bytes]], secrets: ClusterSecrets
) -> tuple[str, list[tuple[str, str]]]:
    """A management frontend and two query frontends: the management URL, and each query
    frontend's (HTTP URL, RPC address)."""
    mgmt_port = free_port()
    secrets_dir = str(secrets.frontend_dir)
    spawn("management", "-m", "management_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(mgmt_port),
          "--secrets-dir", secrets_dir)  # fmt: skip
    frontends = []
    for i in range(2):
        http_port, rpc_port = free_port(), free_port()
        spawn(f"query-frontend-{i}", "-m", "query_frontend", "--redis-url", redis_url,
              "--host", "127.0.0.1", "--port", str(http_port), "--rpc-host", "127.0.0.1",
              "--rpc-port", str(rpc_port), "--frontend-id", f"qf-{i}",
              "--secrets-dir", secrets_dir)  # fmt: skip
        frontends.append((f"http://127.0.0.1:{http_port}", f"tcp://127.0.0.1:{rpc_port}"))
    return f"http://127.0.0.1:{mgmt_port}", frontends


def test_one_replica_answers_both_query_frontends(
    redis_url: str,
    spawn: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    secrets: ClusterSecrets,
) -> None:
    mgmt, frontends = start_control_and_two_frontends(redis_url, spawn, secrets)

    with httpx.Client(timeout=10, headers=secrets.admin_headers) as http:
        eventually(
            lambda: http.get(f"{mgmt}/healthz").status_code == 200,
            "management up",
            STARTUP_S,
            STARTING,
        )
        app = {"name": "adder", "input_type": "doubles", "default_output": "none",
               "slo_micros": 5_000_000}  # fmt: skip
        assert http.post(f"{mgmt}/admin/apps", json=app).status_code == 201
        model = {"name": "summer", "version": "1", "input_type": "doubles"}
        assert http.post(f"{mgmt}/admin/models", json=model).status_code == 201
        link = http.post(f"{mgmt}/admin/apps/adder/links", json={"model_name": "summer"})
        assert link.status_code == 200, link.text

        bundle = tmp_path / "bundle"
        write_closure_bundle(bundle, make_model(), InputType.DOUBLES, ["numpy"])
        spawn("replica", "-m", "model_container", "--bundle", str(bundle),
              "--bundle-sha256", bundle_digest(bundle),
              "--frontend", ",".join(rpc for _, rpc in frontends),
              "--name", "summer", "--version", "1", "--replica-id", "summer-0")  # fmt: skip

        for i, (base, _) in enumerate(frontends):
            x = [float(i), 2.0]

            def answered(base: str = base, x: list[float] = x) -> bool:
                reply = http.post(f"{base}/adder/predict", json={"input": x})
                return reply.status_code == 200 and reply.json()["default"] is False

            eventually(answered, f"{base} answers from the replica", STARTUP_S, STARTING)
            reply = http.post(f"{base}/adder/predict", json={"input": [float(i), 40.0]}).json()
            assert (reply["output"], reply["default"]) == (40.0 + i, False)

        # The control plane sees one connection per frontend; neither overwrote the other.
        def recorded() -> list[tuple[str, str]]:
            listed = http.get(f"{mgmt}/admin/replicas").json()
            return sorted((r["replica_id"], r["frontend"]) for r in listed)

        eventually(
            lambda: len(recorded()) == 2, "both frontends recorded the replica", STARTUP_S, STARTING
        )
        assert recorded() == [("summer-0", "qf-0"), ("summer-0", "qf-1")]


def test_both_frontends_learn_into_one_policy_state(
    redis_url: str,
    spawn: Callable[..., subprocess.Popen[bytes]],
    tmp_path: Path,
    secrets: ClusterSecrets,
) -> None:
    """Feedback sent to either frontend adds up in Redis, and each routes by all of it."""
    mgmt, frontends = start_control_and_two_frontends(redis_url, spawn, secrets)
    rpcs = ",".join(rpc for _, rpc in frontends)

    with httpx.Client(timeout=10, headers=secrets.admin_headers) as http:
        eventually(
            lambda: http.get(f"{mgmt}/healthz").status_code == 200,
            "management up",
            STARTUP_S,
            STARTING,
        )
        app = {"name": "learner", "input_type": "doubles", "default_output": "none",
               "slo_micros": 5_000_000, "policy": "exp3",
               "policy_params": {"loss": "zero_one"}}  # fmt: skip
        assert http.post(f"{mgmt}/admin/apps", json=app).status_code == 201
        models: dict[str, Callable[[Any], Any]] = {
            "summer": make_model(),
            "zeroer": lambda xs: [0.0 for _ in xs],
        }
        for name, func in models.items():
            body = {"name": name, "version": "1", "input_type": "doubles"}
            assert http.post(f"{mgmt}/admin/models", json=body).status_code == 201
            link = http.post(f"{mgmt}/admin/apps/learner/links", json={"model_name": name})
            assert link.status_code == 200, link.text
            bundle = tmp_path / f"bundle-{name}"
            write_closure_bundle(bundle, func, InputType.DOUBLES, ["numpy"])
            spawn(f"replica-{name}", "-m", "model_container", "--bundle", str(bundle),
                  "--bundle-sha256", bundle_digest(bundle),
                  "--frontend", rpcs, "--name", name, "--version", "1",
                  "--replica-id", f"{name}-0")  # fmt: skip

        def both_connected(base: str) -> bool:
            status = http.get(f"{base}/status").json()
            return all(len(status["models"].get(f"{m}:1", {}).get("replicas", [])) == 1
                       for m in models)  # fmt: skip

        for base, _ in frontends:
            eventually(
                lambda base=base: both_connected(base),
                f"{base} has both replicas",
                STARTUP_S,
                STARTING,
            )

        # The first frontend takes its copy of the (empty) state now, before any feedback.
        first = frontends[0][0]
        assert http.post(f"{first}/learner/predict", json={"input": [0.0]}).status_code == 200
        # Feedback only through the second frontend: "summer" is right, "zeroer" is not.
        second = frontends[1][0]
        for i in range(200):
            x = [float(i + 1), 1.0]
            reply = http.post(f"{second}/learner/update", json={"input": x, "label": sum(x)})
            assert reply.status_code == 200, reply.text
        reply = http.post(f"{first}/learner/update", json={"input": [5.0, 5.0], "label": 10.0})
        assert reply.status_code == 200, reply.text

        state = http.get(f"{mgmt}/admin/apps/learner/policy/state").json()
        assert state["updates"] == 201
        assert sum(arm["updates"] for arm in state["arms"].values()) == 201

        # The first frontend routes by what the second one learned.
        def first_prefers_summer() -> bool:
            served = [
                http.post(f"{first}/learner/predict", json={"input": [float(i), 0.5]}).json()
                for i in range(100)
            ]
            return sum(s["models"] == ["summer:1"] for s in served) > 70

        eventually(
            first_prefers_summer, "the first frontend follows the shared state", 30, STARTING
        )


def test_api_keys_guard_an_app_on_both_frontends_and_revocation_reaches_both(
    redis_url: str, spawn: Callable[..., subprocess.Popen[bytes]], secrets: ClusterSecrets
) -> None:
    """401 without a key or with an unknown one, 403 with another app's, 200 with the
    app's own; a revoked key is refused by every frontend; apps without keys stay open."""
    mgmt, frontends = start_control_and_two_frontends(redis_url, spawn, secrets)
    bases = [base for base, _ in frontends]
    body = {"input": [1.0, 2.0]}

    def bearer(key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}

    with httpx.Client(timeout=10) as http:
        admin = secrets.admin_headers
        eventually(
            lambda: http.get(f"{mgmt}/healthz").status_code == 200,
            "management up",
            STARTUP_S,
            STARTING,
        )
        for name in ("closed", "other", "open"):
            app = {"name": name, "input_type": "doubles", "default_output": "none",
                   "slo_micros": 20_000}  # fmt: skip
            assert http.post(f"{mgmt}/admin/apps", json=app, headers=admin).status_code == 201
        # Unauthenticated, a key cannot be made, and nothing is stored.
        assert http.post(f"{mgmt}/admin/apps/closed/keys").status_code == 401
        made = http.post(f"{mgmt}/admin/apps/closed/keys", headers=admin)
        assert made.status_code == 201, made.text
        key, digest = made.json()["key"], made.json()["key_sha256"]
        assert digest == hashlib.sha256(key.encode()).hexdigest()
        other_key = http.post(f"{mgmt}/admin/apps/other/keys", headers=admin).json()["key"]
        info = http.get(f"{mgmt}/admin/apps/closed", headers=admin).json()
        assert info["api_keys"] == 1 and digest not in str(info) and key not in str(info)
        stored = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert stored.smembers("schooner:app:closed:keys") == {digest}  # hashed only
        finally:
            stored.close()

        def status(base: str) -> dict[str, Any]:
            reply = http.get(f"{base}/status", headers=admin)
            assert reply.status_code == 200, reply.text
            return dict(reply.json())

        for base in bases:
            eventually(
                lambda base=base: status(base)["apps"].get("closed", {}).get("api_keys") is True,
                f"{base} knows closed has keys",
                STARTUP_S,
                STARTING,
            )
            eventually(
                lambda base=base: status(base)["apps"].get("other", {}).get("api_keys") is True,
                f"{base} knows other has keys",
                STARTUP_S,
                STARTING,
            )
            # /status needs the admin token; an API key is not one.
            assert http.get(f"{base}/status").status_code == 401
            assert http.get(f"{base}/status", headers=bearer(key)).status_code == 401
            for path in ("predict", "update"):
                url = f"{base}/closed/{path}"
                missing = http.post(url, json=body)
                assert missing.status_code == 401, missing.text
                assert missing.headers["www-authenticate"].startswith("Bearer")
                assert (
                    http.post(url, json=body, headers=bearer("sk-closed-nope")).status_code == 401
                )
                wrong_app = http.post(url, json=body, headers=bearer(other_key))
                assert wrong_app.status_code == 403, wrong_app.text
                assert other_key not in wrong_app.text
            reply = http.post(f"{base}/closed/predict", json=body, headers=bearer(key))
            assert reply.status_code == 200, reply.text
            assert reply.json()["default"] is True  # no model linked: the default answers
            assert http.post(f"{base}/open/predict", json=body).status_code == 200

        revoked = http.delete(f"{mgmt}/admin/apps/closed/keys/{digest}", headers=admin)
        assert revoked.status_code == 200 and revoked.json()["api_keys"] == 0
        assert (
            http.delete(f"{mgmt}/admin/apps/closed/keys/{digest}", headers=admin).status_code == 404
        )
        # Every frontend refuses it as soon as it applies the feed; no key left: open again.
        for base in bases:
            eventually(
                lambda base=base: status(base)["apps"]["closed"]["api_keys"] is False,
                f"{base} applies the revocation",
                STARTUP_S,
                STARTING,
            )
            assert http.post(f"{base}/closed/predict", json=body).status_code == 200
        # With another key made, the revoked one is refused (not just "open").
        newer = http.post(f"{mgmt}/admin/apps/closed/keys", headers=admin).json()["key"]
        for base in bases:
            eventually(
                lambda base=base: (
                    http.post(f"{base}/closed/predict", json=body, headers=bearer(key)).status_code
                    == 401
                ),
                f"{base} refuses the revoked key",
                STARTUP_S,
                STARTING,
            )
            reply = http.post(f"{base}/closed/predict", json=body, headers=bearer(newer))
            assert reply.status_code == 200
        # Deleting the app deletes its keys.
        assert http.delete(f"{mgmt}/admin/apps/closed", headers=admin).status_code == 204
        stored = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            assert not stored.exists("schooner:app:closed:keys")
        finally:
            stored.close()


def test_status_and_metrics_need_the_admin_token_but_the_metrics_port_is_open(
    redis_url: str, spawn: Callable[..., subprocess.Popen[bytes]], secrets: ClusterSecrets
) -> None:
    http_port, rpc_port, metrics_port = free_port(), free_port(), free_port()
    spawn("query-frontend", "-m", "query_frontend", "--redis-url", redis_url,
          "--host", "127.0.0.1", "--port", str(http_port), "--rpc-host", "127.0.0.1",
          "--rpc-port", str(rpc_port), "--secrets-dir", str(secrets.frontend_dir),
          "--metrics-port", str(metrics_port))  # fmt: skip
    base = f"http://127.0.0.1:{http_port}"
    with httpx.Client(timeout=10) as http:
        eventually(
            lambda: http.get(f"{base}/healthz").status_code == 200,
            "query frontend up",
            STARTUP_S,
            STARTING,
        )
        for path in ("/status", "/metrics"):
            anonymous = http.get(f"{base}{path}")
            assert anonymous.status_code == 401, anonymous.text
            assert anonymous.json()["error"] == "unauthorized"
            wrong = http.get(f"{base}{path}", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            assert http.get(f"{base}{path}", headers=secrets.admin_headers).status_code == 200
        scraped = http.get(f"http://127.0.0.1:{metrics_port}/metrics")
        assert scraped.status_code == 200 and "schooner_" in scraped.text
        # The open port serves the metrics and nothing else.
        assert http.get(f"http://127.0.0.1:{metrics_port}/status").status_code == 404
