"""What the Docker manager asks the engine for, in both network modes, without an engine.

The e2e suite runs host networking only (bridge networks cannot be used on the test
machines), so the user-network mode -- the production default -- is pinned here: names,
labels, published ports and the addresses containers use to find each other.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from ports import free_ports

from admin import (
    ClusterNotRunningError,
    ContainerManagerError,
    DockerContainerManager,
    InvalidRequestError,
)
from admin.container_managers import _docker_specs as specs
from admin.container_managers._docker_credentials import DockerCredentialStore
from admin.container_managers._docker_specs import ClusterSettings
from admin.container_managers.base import new_replica_ids, replica_id
from model_container import credentials as cred

DIGEST = "cd" * 32


def network_settings(**kw: Any) -> ClusterSettings:
    return ClusterSettings(
        "prod",
        query_port=1337,
        management_port=1338,
        rpc_port=7000,
        redis_port=16379,
        **kw,
    )


def host_settings(**kw: Any) -> ClusterSettings:
    return ClusterSettings(
        "ci",
        **{
            "network_mode": "host",
            "query_port": 32001,
            "management_port": 32002,
            "rpc_port": 32003,
            "redis_port": 32004,
            **kw,
        },
    )


# --------------------------------------------------------------------------- network mode


def test_network_mode_is_the_default_and_names_its_network_after_the_cluster() -> None:
    s = network_settings()
    assert s.network_mode == "network" and s.network == "schooner-prod"
    assert ClusterSettings("prod", network="shared").network == "shared"


def test_on_a_user_network_containers_find_each_other_by_name() -> None:
    s = network_settings()
    redis = s.redis_spec("schooner/redis:abc")
    management = s.management_spec("schooner/frontend:abc")
    query = s.query_spec("schooner/frontend:abc")
    replica = s.replica_spec(
        "schooner/model-m:1-abc",
        name="m",
        version="1",
        input_type="doubles",
        bundle_sha256=DIGEST,
        replica_id="m-1-r0",
    )
    holder = s.query_net_spec("schooner/frontend:abc")
    for spec in (redis, management, holder, query, replica):
        assert spec["restart_policy"] == {"Name": "unless-stopped"}
        assert spec["detach"] is True
        assert spec["labels"]["schooner.cluster"] == "prod"
    for spec in (redis, management, holder, replica):
        assert spec["network"] == "schooner-prod"
        assert "network_mode" not in spec
    # The query frontend lives in its holder's network stack, as in a pod.
    assert query["network_mode"] == "container:schooner-prod-query-net"
    assert "network" not in query and "ports" not in query
    assert redis["name"] == "schooner-prod-redis"
    assert "redis://schooner-prod-redis:6379/0" in management["command"]
    assert "redis://schooner-prod-redis:6379/0" in query["command"]
    assert replica["environment"]["SCHOONER_FRONTEND"] == "tcp://schooner-prod-query-net:7000"
    # Inside its own network namespace each component listens on every address.
    assert _flag(query["command"], "--host") == "0.0.0.0"
    assert _flag(query["command"], "--rpc-host") == "0.0.0.0"
    assert replica["environment"]["SCHOONER_METRICS_HOST"] == "0.0.0.0"
    assert replica["environment"]["SCHOONER_METRICS_PORT"] == "9100"


def test_on_a_user_network_the_ports_are_published_on_the_host_address() -> None:
    s = network_settings(host="127.0.0.1")
    assert s.query_net_spec("f")["ports"] == {
        "1337/tcp": ("127.0.0.1", 1337),
        "7000/tcp": ("127.0.0.1", 7000),
    }
    assert s.management_spec("f")["ports"] == {"1338/tcp": ("127.0.0.1", 1338)}
    assert s.redis_spec("r")["ports"] == {"6379/tcp": ("127.0.0.1", 16379)}
    replica = s.replica_spec(
        "i", name="m", version="1", input_type="ints", bundle_sha256=DIGEST, replica_id="m-1-r0"
    )
    assert "ports" not in replica  # replicas dial out; nothing to publish
    exposed = network_settings(host="0.0.0.0")
    assert exposed.query_net_spec("f")["ports"]["1337/tcp"] == ("0.0.0.0", 1337)
    assert exposed.connect_host == "127.0.0.1"


# --------------------------------------------------------------------------- host mode


def test_in_host_mode_every_component_listens_on_its_own_host_port() -> None:
    s = host_settings()
    redis, query = s.redis_spec("r"), s.query_spec("f")
    management = s.management_spec("f")
    replica = s.replica_spec(
        "i",
        name="m",
        version="1",
        input_type="ints",
        bundle_sha256=DIGEST,
        replica_id="m-1-r0",
        metrics_port=40001,
    )
    for spec in (redis, management, query, replica):
        assert spec["network_mode"] == "host"
        assert "ports" not in spec and "network" not in spec
    assert redis["command"][2:6] == ["--port", "32004", "--bind", "127.0.0.1"]
    assert "redis://127.0.0.1:32004/0" in query["command"]
    assert (_flag(query["command"], "--port"), _flag(query["command"], "--rpc-port")) == (
        "32001",
        "32003",
    )
    assert _flag(management["command"], "--port") == "32002"
    assert replica["environment"]["SCHOONER_FRONTEND"] == "tcp://127.0.0.1:32003"
    assert replica["environment"]["SCHOONER_METRICS_PORT"] == "40001"
    assert replica["labels"]["schooner.metrics_port"] == "40001"


def test_redis_keeps_an_append_only_file_in_the_named_volume() -> None:
    for s in (network_settings(), host_settings()):
        redis = s.redis_spec("r")
        assert redis["volumes"][s.volume] == {"bind": "/data", "mode": "rw"}
        assert s.volume == f"schooner-{s.cluster_name}-redis-data"
        assert _flag(redis["command"], "--appendonly") == "yes"
        assert _flag(redis["command"], "--dir") == "/data"


def test_redis_requires_the_password_from_a_read_only_config_file() -> None:
    for s in (network_settings(), host_settings()):
        redis = s.redis_spec("r")
        volume = f"schooner-{s.cluster_name}-secrets-redis"
        assert redis["volumes"][volume] == {"bind": "/run/schooner/redis", "mode": "ro"}
        assert redis["command"][:2] == ["redis-server", "/run/schooner/redis/redis.conf"]
        assert "--protected-mode" not in redis["command"]
        assert "--requirepass" not in redis["command"]


def test_frontends_and_replicas_mount_only_their_own_credentials_read_only() -> None:
    s = network_settings()
    replica = s.replica_spec(
        "img", name="m", version="1", input_type="doubles", bundle_sha256=DIGEST, replica_id="r"
    )
    for spec, kind in (
        (s.management_spec("f"), "secrets-frontend"),
        (s.query_spec("f"), "secrets-frontend"),
        (replica, "secrets-replica"),
    ):
        mounts = {v: m for v, m in spec["volumes"].items() if m["bind"] == "/run/schooner/secrets"}
        assert mounts == {f"schooner-prod-{kind}": {"bind": "/run/schooner/secrets", "mode": "ro"}}
        assert spec["environment"]["SCHOONER_SECRETS_DIR"] == "/run/schooner/secrets"
        assert "schooner-prod-credentials" not in spec["volumes"]  # the admin token's
    assert s.credential_volumes == [
        "schooner-prod-credentials",
        "schooner-prod-secrets-frontend",
        "schooner-prod-secrets-replica",
        "schooner-prod-secrets-redis",
    ]


class FakeVolumes:
    """``ClusterEngine``'s volume file copies, in memory: volume -> name -> (text, mode)."""

    def __init__(self) -> None:
        self.volumes: dict[str, dict[str, tuple[str, int]]] = {}

    def volume_exists(self, volume: str) -> bool:
        return volume in self.volumes

    def remove_volume(self, volume: str) -> None:
        self.volumes.pop(volume, None)

    def write_files(
        self, volume: str, image: str, files: dict[str, str], *, owner: int, mode: int
    ) -> None:
        assert owner == 10001  # the images' user, not root
        self.volumes.setdefault(volume, {}).update({n: (t, mode) for n, t in files.items()})

    def read_files(self, volume: str, image: str) -> dict[str, str]:
        return {n: t for n, (t, _) in self.volumes.get(volume, {}).items()}

    def text(self, volume: str) -> dict[str, str]:
        return self.read_files(volume, "")


def store(settings: ClusterSettings, engine: FakeVolumes) -> DockerCredentialStore:
    return DockerCredentialStore(engine, settings, lambda: "img")  # type: ignore[arg-type]


def test_docker_credentials_are_generated_once_and_kept_by_the_cluster() -> None:
    s, engine = network_settings(), FakeVolumes()
    first = store(s, engine).ensure()
    again = store(s, engine).ensure()  # a later start, from another manager object
    assert again.admin_token == first.admin_token
    assert again.rpc_server_secret == first.rpc_server_secret
    frontend = engine.text("schooner-prod-secrets-frontend")
    replica = engine.text("schooner-prod-secrets-replica")
    assert set(frontend) == set(cred.FRONTEND_FILES)
    assert set(replica) == set(cred.REPLICA_FILES)
    assert first.admin_token not in {*frontend.values(), *replica.values()}
    redis_conf = engine.text("schooner-prod-secrets-redis")["redis.conf"]
    assert redis_conf == f'requirepass "{first.redis_password}"'
    modes = {mode for files in engine.volumes.values() for _, mode in files.values()}
    assert modes == {0o400, 0o444}  # 0444: redis.conf, in Redis's volume alone


def test_docker_rotation_changes_the_token_and_its_digests_only() -> None:
    s, engine = network_settings(), FakeVolumes()
    before = store(s, engine).ensure()
    after = store(s, engine).rotate_admin_token()
    assert after is not None and after.admin_token != before.admin_token
    assert after.rpc_client_secret == before.rpc_client_secret
    assert after.redis_password == before.redis_password
    for kind in ("secrets-frontend", "secrets-replica"):
        files = engine.text(f"schooner-prod-{kind}")
        assert files[cred.ADMIN_TOKEN_SHA256] == cred.sha256_hex(after.admin_token)
    assert store(s, engine).load().admin_token == after.admin_token  # type: ignore[union-attr]
    assert store(network_settings(), FakeVolumes()).rotate_admin_token() is None


def test_with_an_external_redis_the_frontends_get_no_redis_password() -> None:
    engine = FakeVolumes()
    store(network_settings(), engine).ensure()  # first with its own Redis, then the user's
    s = network_settings(redis_url="redis://redis.internal:6379/3")
    store(s, engine).ensure()
    assert cred.REDIS_PASSWORD not in engine.text("schooner-prod-secrets-frontend")
    assert "schooner-prod-secrets-redis" not in engine.volumes


def test_an_external_redis_is_used_as_given() -> None:
    s = network_settings(redis_url="redis://redis.internal:6379/3")
    assert "redis://redis.internal:6379/3" in s.query_spec("f")["command"]


def test_the_query_frontend_has_a_fixed_id_so_a_restart_drops_its_old_records() -> None:
    assert _flag(host_settings().query_spec("f")["command"], "--frontend-id") == "docker-ci-query"


def test_replicas_carry_their_identity_in_labels_and_environment() -> None:
    spec = network_settings().replica_spec(
        "img",
        name="m",
        version="2",
        input_type="strings",
        bundle_sha256=DIGEST,
        replica_id="m-2-r3",
    )
    assert spec["name"] == "schooner-prod-m-2-r3"
    assert spec["init"] is True  # signals forwarded, zombies reaped
    labels = spec["labels"]
    assert (labels["schooner.role"], labels["schooner.model"], labels["schooner.version"]) == (
        "replica",
        "m",
        "2",
    )
    assert labels["schooner.replica_id"] == "m-2-r3"
    env = spec["environment"]
    assert env["SCHOONER_BUNDLE"] == "/opt/schooner/model"
    # The digest recorded in Redis: the replica refuses a bundle in the image that differs.
    assert env["SCHOONER_BUNDLE_SHA256"] == DIGEST
    assert (env["SCHOONER_MODEL_NAME"], env["SCHOONER_MODEL_VERSION"]) == ("m", "2")
    assert (env["SCHOONER_INPUT_TYPE"], env["SCHOONER_REPLICA_ID"]) == ("strings", "m-2-r3")
    assert "schooner.settings" not in labels


def test_frontends_carry_the_settings_that_connect_adopts() -> None:
    s = host_settings(key_prefix="team")
    label = s.query_spec("f")["labels"]["schooner.settings"]
    blank = ClusterSettings("ci")
    assert blank.adopt(label) == s
    assert blank.adopt('{"query_port": 5, "unknown": 1}').query_port == 5
    with pytest.raises(ClusterNotRunningError, match="not a JSON object"):
        blank.adopt("[]")


def test_bad_settings_are_refused_with_the_fix() -> None:
    with pytest.raises(InvalidRequestError, match="'host'"):
        ClusterSettings("c", network_mode="bridge")
    with pytest.raises(InvalidRequestError, match="query_port"):
        ClusterSettings("c", query_port=70000)
    with pytest.raises(InvalidRequestError, match="cluster name"):
        DockerContainerManager("Not_A_Name")


def test_busy_host_ports_are_named_with_the_fix() -> None:
    # The other ports free ones, not the defaults another cluster on this machine may hold.
    free = dict(zip(("query_port", "management_port", "redis_port"), free_ports(3), strict=True))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        busy = sock.getsockname()[1]
        cm = DockerContainerManager("c", network_mode="host", rpc_port=busy, **free)
        with pytest.raises(ContainerManagerError) as info:
            cm._check_ports_free()
    assert str(info.value) == (
        f"port(s) in use on 127.0.0.1: rpc_port={busy}. Another Schooner or another program "
        "holds them: stop it, or pass other ports to DockerContainerManager(...)"
    )


def test_the_manager_does_no_io_until_used() -> None:
    cm = DockerContainerManager("quiet", network_mode="host", query_port=32111)
    assert cm._docker is None
    assert cm.get_query_addr() == "127.0.0.1:32111"
    assert cm.build_network_mode == "host"  # builds reach the index as containers do
    assert DockerContainerManager("prod").build_network_mode is None
    assert "host network" in repr(cm) and "network 'schooner-prod'" in repr(
        DockerContainerManager("prod")
    )


# --------------------------------------------------------------------------- privileges, TLS


def all_specs(s: ClusterSettings) -> dict[str, dict[str, Any]]:
    return {
        "redis": s.redis_spec("schooner/redis:abc"),
        "management": s.with_tls(s.management_spec("f")),
        "query": s.with_tls(s.query_spec("f")),
        "replica": s.replica_spec(
            "img",
            name="m",
            version="1",
            input_type="doubles",
            bundle_sha256=DIGEST,
            replica_id="m-1-r0",
        ),
    }


def test_every_container_runs_as_the_images_user_with_no_capabilities() -> None:
    for s in (network_settings(), host_settings()):
        for role, spec in all_specs(s).items():
            assert spec["user"] == "10001:10001", role
            assert spec["cap_drop"] == ["ALL"], role
            assert spec["security_opt"] == ["no-new-privileges"], role
            assert "cap_add" not in spec and "privileged" not in spec, role


def test_a_redis_image_of_the_users_own_keeps_its_user_and_what_its_entrypoint_needs() -> None:
    spec = network_settings().redis_spec("redis:7", own_image=False)
    assert "user" not in spec  # the official image starts as root and switches to "redis"
    assert spec["cap_drop"] == ["ALL"]
    assert spec["cap_add"] == ["CHOWN", "SETGID", "SETUID"]
    assert spec["security_opt"] == ["no-new-privileges"]


def test_tls_files_are_mounted_read_only_into_both_frontends_only() -> None:
    s = network_settings(tls_certfile="/etc/schooner/cert.pem", tls_keyfile="/etc/schooner/key.pem")
    specs_ = all_specs(s)
    for role in ("management", "query"):
        spec = specs_[role]
        tls_mounts = {k: v for k, v in spec["volumes"].items() if k.startswith("/etc/")}
        assert tls_mounts == {
            "/etc/schooner/cert.pem": {"bind": "/run/schooner/tls/cert.pem", "mode": "ro"},
            "/etc/schooner/key.pem": {"bind": "/run/schooner/tls/key.pem", "mode": "ro"},
        }
        assert _flag(spec["command"], "--tls-certfile") == "/run/schooner/tls/cert.pem"
        assert _flag(spec["command"], "--tls-keyfile") == "/run/schooner/tls/key.pem"
    for role in ("redis", "replica"):
        assert "--tls-certfile" not in specs_[role]["command"]
        assert "/etc/schooner/key.pem" not in specs_[role].get("volumes", {})
    # Without TLS, nothing is mounted into the frontends.
    plain = network_settings()
    assert plain.with_tls(plain.query_spec("f")) == plain.query_spec("f")


def test_a_tls_cluster_is_reached_over_https_and_connect_learns_it_from_the_label(
    tmp_path: Path,
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cm = DockerContainerManager("tls", network_mode="host", tls_certfile=cert, tls_keyfile=key)
    assert cm.management_url.startswith("https://127.0.0.1:")
    assert cm.query_url.startswith("https://127.0.0.1:")
    assert DockerContainerManager("plain").management_url.startswith("http://")
    label = cm.settings.query_spec("f")["labels"]["schooner.settings"]
    adopted = ClusterSettings("tls").adopt(label)
    assert (adopted.tls, adopted.tls_certfile, adopted.tls_keyfile) == (True, str(cert), str(key))


def test_a_certificate_without_its_key_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequestError, match="tls_certfile= and tls_keyfile= together"):
        DockerContainerManager("tls", tls_certfile=tmp_path / "cert.pem")
    with pytest.raises(InvalidRequestError, match="tls_certfile= and tls_keyfile= together"):
        DockerContainerManager("tls", tls_keyfile=tmp_path / "key.pem")


# --------------------------------------------------------------------------- replica states


def attrs(status: str, exit_code: int = 0, restarts: int = 0, **state: Any) -> dict[str, Any]:
    return {"State": {"Status": status, "ExitCode": exit_code, **state}, "RestartCount": restarts}


def test_running_or_restarting_once_after_a_crash_counts_as_running() -> None:
    assert specs.replica_state("r", "c", attrs("running")).running
    assert specs.replica_state("r", "c", attrs("created")).running
    assert specs.replica_state("r", "c", attrs("restarting", 137, restarts=1)).running


def test_a_replica_that_cannot_load_its_model_is_reported_with_its_log() -> None:
    state = specs.replica_state(
        "m-1-r0", "schooner-c-m-1-r0", attrs("restarting", 2, restarts=1), "No module named 'x'"
    )
    assert not state.running and state.pid is None
    assert "exits at start with status 2" in state.detail
    assert "schooner-c-m-1-r0" in state.detail and state.detail.endswith("No module named 'x'")


def test_several_query_frontends_share_the_query_port_each_with_its_rpc_port() -> None:
    s = network_settings(query_frontends=3)
    holder = s.query_net_spec("f")
    # The holder publishes the one query port and every frontend's RPC port.
    assert holder["name"] == "schooner-prod-query-net"
    assert holder["labels"]["schooner.role"] == "query-net"
    assert holder["ports"] == {
        "1337/tcp": ("127.0.0.1", 1337),
        "7000/tcp": ("127.0.0.1", 7000),
        "7001/tcp": ("127.0.0.1", 7001),
        "7002/tcp": ("127.0.0.1", 7002),
    }
    queries = [s.query_spec("f", i) for i in range(3)]
    assert [q["name"] for q in queries] == [
        "schooner-prod-query",
        "schooner-prod-query-1",
        "schooner-prod-query-2",
    ]
    for i, q in enumerate(queries):
        assert q["network_mode"] == "container:schooner-prod-query-net"
        assert _flag(q["command"], "--port") == "1337" and "--reuse-port" in q["command"]
        assert _flag(q["command"], "--rpc-port") == str(7000 + i)
        assert q["labels"]["schooner.frontend_index"] == str(i)
    ids = [_flag(q["command"], "--frontend-id") for q in queries]
    assert ids == ["docker-prod-query", "docker-prod-query-1", "docker-prod-query-2"]
    replica = s.replica_spec(
        "i", name="m", version="1", input_type="ints", bundle_sha256=DIGEST, replica_id="m-1-r0"
    )
    # Every replica registers with every frontend.
    assert replica["environment"]["SCHOONER_FRONTEND"] == (
        "tcp://schooner-prod-query-net:7000,tcp://schooner-prod-query-net:7001,"
        "tcp://schooner-prod-query-net:7002"
    )
    with pytest.raises(InvalidRequestError, match="query frontend 3 of 3"):
        s.query_spec("f", 3)
    # One frontend alone binds its port as before.
    assert "--reuse-port" not in network_settings().query_spec("f")["command"]


def test_in_host_mode_several_query_frontends_share_the_hosts_query_port() -> None:
    s = host_settings(query_frontends=2, redis_port=32010)
    a, b = s.query_spec("f", 0), s.query_spec("f", 1)
    for q in (a, b):
        assert q["network_mode"] == "host" and "--reuse-port" in q["command"]
        assert _flag(q["command"], "--port") == "32001"
    assert [_flag(q["command"], "--rpc-port") for q in (a, b)] == ["32003", "32004"]
    replica = s.replica_spec(
        "i", name="m", version="1", input_type="ints", bundle_sha256=DIGEST, replica_id="r"
    )
    assert replica["environment"]["SCHOONER_FRONTEND"] == (
        "tcp://127.0.0.1:32003,tcp://127.0.0.1:32004"
    )


def test_query_frontends_and_their_rpc_ports_are_checked() -> None:
    for bad in (0, -1, True, "2"):
        with pytest.raises(InvalidRequestError, match="query_frontends must be an integer"):
            network_settings(query_frontends=bad)
    with pytest.raises(InvalidRequestError, match="rpc_port"):
        ClusterSettings("x", rpc_port=65535, query_frontends=2)
    # The second frontend's RPC port would be Redis's.
    with pytest.raises(InvalidRequestError, match="redis_port and rpc_port \\+ 1"):
        DockerContainerManager("x", rpc_port=7000, redis_port=7001, query_frontends=2)
    adopted = ClusterSettings("prod").adopt(network_settings(query_frontends=2).to_label())
    assert adopted.query_frontends == 2


def test_a_query_frontend_is_given_longer_to_stop_than_it_drains() -> None:
    for s in (network_settings(), host_settings()):
        query = s.query_spec("f")
        assert query["stop_signal"] == "SIGTERM"
        assert int(query["labels"]["schooner.stop_timeout"]) > specs.DEFAULT_DRAIN_TIMEOUT
        assert "--drain-timeout" not in query["command"]  # the frontend's default
    slow = network_settings(drain_timeout=120).query_spec("f")
    assert _flag(slow["command"], "--drain-timeout") == "120"
    assert int(slow["labels"]["schooner.stop_timeout"]) > 120


def test_a_replicas_memory_limit_covers_memory_and_swap() -> None:
    s = network_settings()
    limited = s.replica_spec(
        "i",
        name="m",
        version="1",
        input_type="ints",
        bundle_sha256=DIGEST,
        replica_id="r",
        memory_limit=128 * 2**20,
    )
    assert limited["mem_limit"] == limited["memswap_limit"] == 128 * 2**20
    unlimited = s.replica_spec(
        "i", name="m", version="1", input_type="ints", bundle_sha256=DIGEST, replica_id="r"
    )
    assert "mem_limit" not in unlimited and "memswap_limit" not in unlimited


def limited(status: str, exit_code: int = 0, restarts: int = 0, **state: Any) -> dict[str, Any]:
    """``attrs`` of a replica with a 128Mi memory limit whose last run lasted ``ran`` s."""
    doc = attrs(status, exit_code, restarts, **state)
    doc["HostConfig"] = {"Memory": 128 * 2**20}
    return doc


RAN_1_S = {"StartedAt": "2026-01-01T10:00:00.5Z", "FinishedAt": "2026-01-01T10:00:01.5Z"}
RAN_1_MIN = {"StartedAt": "2026-01-01T10:00:00.123456789Z", "FinishedAt": "2026-01-01T10:01:00Z"}


def test_a_replica_that_hit_its_memory_limit_restarts_and_says_why() -> None:
    # Killed by the kernel, being restarted: running, with the reason.
    oom = specs.replica_state("r", "c", limited("restarting", 137, 1, OOMKilled=True, **RAN_1_MIN))
    assert oom.running and oom.memory_limit_hit and oom.restarts == 1
    assert "hit its memory limit (128Mi)" in oom.detail
    # Running again: the engine keeps OOMKilled, and the restart count.
    back = specs.replica_state("r", "c", limited("running", 0, 2, OOMKilled=True))
    assert back.running and back.memory_limit_hit and back.state == "running"
    assert "restarted 2 time(s)" in back.detail and "hit its memory limit (128Mi)" in back.detail
    # Exit status 76: the model raised MemoryError; the status comes from the die event.
    raised = specs.replica_state("r", "c", limited("running", 0, 1), last_exit_code=76)
    assert raised.running and raised.memory_limit_hit
    assert "hit its memory limit (128Mi)" in raised.detail
    # Never restarted: nothing to say.
    fresh = specs.replica_state("r", "c", limited("running"))
    assert fresh.running and not fresh.memory_limit_hit and fresh.detail == ""


def test_restarts_a_frontend_asked_for_are_not_a_crash_loop() -> None:
    # Restarted five times, each after serving a minute: replaced, not failing.
    for code, extra in ((75, {}), (76, {}), (137, {"OOMKilled": True})):
        state = specs.replica_state("r", "c", limited("restarting", code, 5, **extra, **RAN_1_MIN))
        assert state.running, (code, state.detail)
        assert state.state == "restarting"
    asked = specs.replica_state("r", "c", limited("running", 0, 5), last_exit_code=75)
    assert asked.running and not asked.memory_limit_hit
    assert "at its query frontend's request" in asked.detail
    # ... unless it keeps happening right after the start (a model too big for its limit).
    looping = specs.replica_state(
        "r", "c", limited("restarting", 137, 3, OOMKilled=True, **RAN_1_S), "Killed"
    )
    assert not looping.running and looping.state == "failed" and looping.memory_limit_hit
    assert "keeps exiting right after it starts (hit its memory limit (128Mi)" in looping.detail
    assert looping.detail.endswith("Killed")
    # Any other status, over and over, is a crash loop as before, however long each run.
    crashing = specs.replica_state("r", "c", limited("restarting", 1, 3, **RAN_1_MIN))
    assert not crashing.running and "keeps exiting (last status 1" in crashing.detail


def test_a_frontend_that_started_before_its_network_holder_is_cut_off() -> None:
    holder = {"State": {"StartedAt": "2026-01-01T10:00:05.000000001Z"}}
    before = {"State": {"StartedAt": "2026-01-01T10:00:00Z"}}
    after = {"State": {"StartedAt": "2026-01-01T10:00:06Z"}}
    assert specs.cut_off(holder, before)
    assert not specs.cut_off(holder, after)
    assert not specs.cut_off({}, after)


def test_the_replicas_a_frontend_has_connected_are_read_from_its_status() -> None:
    status = {
        "frontend": "docker-prod-query-1",
        "models": {"m:1": {"replicas": ["m-1-r0", "m-1-r1"]}, "n:2": {"replicas": []}},
    }
    assert specs.status_replicas(status) == {"m:1/m-1-r0", "m:1/m-1-r1"}
    assert specs.status_replicas({"models": "?"}) == set()


def test_a_crash_loop_and_a_stopped_replica_are_failures() -> None:
    looping = specs.replica_state("r", "c", attrs("restarting", 1, restarts=3))
    assert not looping.running and "keeps exiting (last status 1" in looping.detail
    stopped = specs.replica_state("r", "c", attrs("exited", 137, OOMKilled=True))
    assert not stopped.running and "exit status 137, killed for lack of memory" in stopped.detail
    broken = specs.replica_state("r", "c", attrs("created", 127, Error="exec: not found"))
    assert not broken.running and "exec: not found" in broken.detail


def test_exit_status_2_is_the_model_containers_config_error() -> None:
    from model_container.cli import EXIT_CONFIG

    assert specs.EXIT_CONFIG == EXIT_CONFIG


def test_replica_ids_and_their_indexes() -> None:
    assert replica_id("m", "1.0", 12) == "m-1.0-r12"
    assert new_replica_ids("m", "1", {"m-1-r0", "m-1-r2"}, 3) == ["m-1-r1", "m-1-r3", "m-1-r4"]
    assert new_replica_ids("m", "1", {"m-1-r0"}, 0) == []
    assert specs.replica_index("m-1.0-r12") == 12
    assert specs.replica_index("someone-else") == -1


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_admin_imports_and_explains_itself_without_the_docker_sdk() -> None:
    import subprocess
    import sys

    script = (
        "import sys\n"
        "sys.modules['docker'] = None  # any import of the SDK now fails\n"
        "from admin import ContainerManagerError, DockerContainerManager\n"
        "cm = DockerContainerManager('no-sdk', network_mode='host')\n"
        "try:\n"
        "    cm.stop_all()\n"
        "except ContainerManagerError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "pip install 'schooner[docker]'" in done.stdout


def test_the_access_log_sample_reaches_the_query_frontend_when_set() -> None:
    assert "--access-log-sample" not in network_settings().query_spec("f")["command"]
    command = network_settings(access_log_sample=0).query_spec("f")["command"]
    assert _flag(command, "--access-log-sample") == "0.0"
    with pytest.raises(InvalidRequestError, match="access_log_sample"):
        network_settings(access_log_sample=2)
