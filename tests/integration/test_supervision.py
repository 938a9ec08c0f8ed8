"""Nothing stays down on the embedded default: the supervisor of a local cluster.

Real processes throughout: a cluster started from a short-lived Python that exits (as a
notebook kernel would), then kill -9 of Redis, a frontend, a replica or the supervisor
itself; each comes back by itself, and the cluster's state (apps, links, versions,
policy state) is what it was. Nothing asserts how fast: every wait polls with a
generous deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import ports
import psutil
import pytest
from polling import eventually

from admin import Connection, LocalContainerManager
from admin.cli import main as cli_main
from admin.container_managers._processes import RunDir
from admin.container_managers._supervision import SupervisorFiles
from admin.deployers.python import deploy_python_closure
from admin.exceptions import ModelStartError, SchoonerError

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
BACK = 60.0  # seconds a process has to come back: generous, the machine is shared


def start_from_a_process_that_exits(data_dir: Path, **settings: Any) -> None:
    """Start the cluster the way a notebook does, from a Python that then goes away."""
    code = (
        "import json, sys\n"
        "from admin import Connection, LocalContainerManager\n"
        "kw = json.loads(sys.argv[2])\n"
        "Connection(LocalContainerManager(data_dir=sys.argv[1], **kw)).start()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code, str(data_dir), json.dumps(settings)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def cluster_processes(data_dir: Path) -> list[psutil.Process]:
    """Every live process whose command line names the data dir (all of the cluster's)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(data_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def pid_of(cm: LocalContainerManager, name: str) -> int:
    record = RunDir(cm.data_dir / "run").load(name)
    assert record is not None, name
    return record.pid


def row(cm: LocalContainerManager, name: str) -> dict[str, Any]:
    return next(p for p in cm.processes() if p["name"] == name)


def came_back(cm: LocalContainerManager, name: str, old_pid: int) -> Callable[[], bool]:
    def check() -> bool:
        r = row(cm, name)
        return r["running"] and r["pid"] != old_pid and r["state"] == "running"

    return check


def cm_alive(cm: LocalContainerManager, name: str) -> bool:
    return bool(row(cm, name)["running"])


def predict(cm: LocalContainerManager, app: str, x: float, timeout: float = 10) -> Any:
    r = httpx.post(f"{cm.query_url}/{app}/predict", json={"input": [x]}, timeout=timeout)
    assert r.status_code == 200, r.text
    return r.json()


def answers(cm: LocalContainerManager, app: str, x: float) -> bool:
    body = predict(cm, app, x)
    return not body["default"] and body["output"] == x * 2


def snapshot(conn: Connection) -> dict[str, Any]:
    """What an operator would compare: apps, links, versions, policies and their state."""
    apps = sorted(conn.get_all_apps(verbose=True), key=lambda a: a["name"])
    return {
        "apps": apps,
        "links": {a["name"]: conn.get_linked_models(a["name"]) for a in apps},
        "models": sorted(
            conn.get_all_models(verbose=True), key=lambda m: (m["name"], m["version"])
        ),
        "policy_state": {a["name"]: conn.get_policy_state(a["name"]) for a in apps},
    }


def doubler() -> Callable[[Any], list[float]]:
    """The model: a local function, so that cloudpickle ships it by value."""

    def double(xs: Any) -> list[float]:
        return [float(x[0]) * 2 for x in xs]

    return double


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LocalContainerManager, Connection]]:
    data_dir = tmp_path_factory.mktemp("supervised")
    start_from_a_process_that_exits(data_dir, **ports.cluster_ports())
    cm = LocalContainerManager(data_dir=data_dir)
    conn = Connection(cm)
    conn.connect()  # the starter is gone: the cluster runs on, supervised
    try:
        conn.register_application("twice", "doubles", "-1", 2_000_000)
        deploy_python_closure(conn, "doubler", "1", "doubles", doubler())
        deploy_python_closure(conn, "doubler", "2", "doubles", doubler())
        conn.link_model_to_app("twice", "doubler")
        conn.set_model_version("doubler", "2")
        eventually(lambda: answers(cm, "twice", 3.0), what="serving", timeout=BACK)
        yield cm, conn
    finally:
        conn.stop_all()
        conn.close()


@pytest.mark.parametrize("name", ["redis", "management", "query", "replica-doubler-2-r0"])
def test_a_killed_process_comes_back_with_the_state_unchanged(
    cluster: tuple[LocalContainerManager, Connection], name: str
) -> None:
    cm, conn = cluster
    before = snapshot(conn)
    restarts = row(cm, name)["restarts"]
    victim = pid_of(cm, name)
    os.kill(victim, signal.SIGKILL)

    eventually(
        came_back(cm, name, victim), what=lambda: f"{name} back: {row(cm, name)}", timeout=BACK
    )
    assert row(cm, name)["restarts"] == restarts + 1
    assert row(cm, name)["reason"] == "killed by SIGKILL"
    eventually(
        lambda: answers(cm, "twice", 5.0),
        what="predictions after the restart",
        timeout=BACK,
        ignoring=(httpx.HTTPError, AssertionError),
    )
    eventually(
        lambda: snapshot(conn) == before,
        what="the same apps, links, versions and policy state",
        timeout=BACK,
        ignoring=(SchoonerError,),
    )
    # One process of each name: nothing was started twice.
    assert len([p for p in cm.processes() if p["name"] == name]) == 1


def test_a_killed_supervisor_is_replaced_by_one_that_adopts_what_runs(
    cluster: tuple[LocalContainerManager, Connection],
) -> None:
    cm, _ = cluster
    pids = {p["name"]: p["pid"] for p in cm.processes() if p["running"]}
    count = len(cluster_processes(cm.data_dir))
    os.kill(pids.pop("supervisor"), signal.SIGKILL)
    eventually(lambda: not row(cm, "supervisor")["running"], what="the supervisor gone")

    with Connection(LocalContainerManager(data_dir=cm.data_dir)) as again:
        again.connect()  # finds the supervisor dead, starts one
    now = {p["name"]: p["pid"] for p in cm.processes() if p["running"]}
    assert now.pop("supervisor") != pids.get("supervisor")
    assert now == pids  # adopted: the same processes, none started anew
    assert len(cluster_processes(cm.data_dir)) == count  # and no duplicates

    # The new supervisor watches the processes it adopted: it brings a killed one back.
    victim = pid_of(cm, "query")
    os.kill(victim, signal.SIGKILL)
    eventually(
        came_back(cm, "query", victim), what="query back under the new supervisor", timeout=BACK
    )
    eventually(
        lambda: answers(cm, "twice", 7.0),
        what="predictions",
        timeout=BACK,
        ignoring=(httpx.HTTPError, AssertionError),
    )


class _ExitAtLoad:
    """Unpickling this in a replica ends the replica at once, with exit code 3."""

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return (os._exit, (3,))


def test_a_replica_that_always_exits_is_marked_failed_with_its_reason(
    cluster: tuple[LocalContainerManager, Connection], capsys: pytest.CaptureFixture[str]
) -> None:
    cm, conn = cluster
    poison = _ExitAtLoad()

    def doomed(xs: Any) -> list[Any]:
        return [repr(poison)] * len(xs)

    deploy_python_closure(conn, "doomed", "1", "doubles", doomed, num_replicas=0)
    info = conn.get_model_info("doomed", "1")
    assert info is not None
    # Recorded first, as every client does: the cluster's reconciler enacts what Redis
    # records, and would stop a replica started behind Redis's back.
    httpx.put(
        f"{cm.management_url}/admin/models/doomed/versions/1/replicas",
        json={"num_replicas": 1},
        headers={"Authorization": f"Bearer {cm.admin_token()}"},
        timeout=10,
    ).raise_for_status()
    cm.set_num_replicas("doomed", "1", "doubles", str(info["bundle_sha256"]), 1)

    def failed() -> bool:
        (state,) = cm.replica_states("doomed", "1")
        return state.state == "failed"

    eventually(failed, what="the replica marked failed", timeout=BACK)
    (state,) = cm.replica_states("doomed", "1")
    assert not state.running and state.restarts >= 4
    assert "crash loop" in state.detail and "exit code 3" in state.detail
    assert cli_main(["status", "--data-dir", str(cm.data_dir), "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)["processes"]}
    failed = listed["replica-doomed-1-r0"]
    assert failed["state"] == "failed" and not failed["running"]
    assert "crash loop" in failed["reason"] and "exit code 3" in failed["reason"]
    # Failed stays failed: the supervisor does not start it again by itself. Scaling
    # tries it again, and says why it failed.
    assert SupervisorFiles(cm.data_dir).program_states()["replica-doomed-1-r0"].state == "failed"
    with pytest.raises(ModelStartError) as raised:
        conn.set_num_replicas("doomed", 1, version="1")
    assert "crash loop" in str(raised.value) and "exit code 3" in str(raised.value)
    conn.stop_models("doomed")
    assert not any(p["name"].startswith("replica-doomed") for p in cm.processes())
    assert answers(cm, "twice", 2.0)  # the rest of the cluster serves on


def test_a_replica_over_its_memory_limit_is_limited_and_restarted_with_the_reason(
    cluster: tuple[LocalContainerManager, Connection],
) -> None:
    cm, conn = cluster
    limit = 3 << 30  # RLIMIT_AS: address space, far above what a replica maps at rest

    def hungry(xs: Any) -> list[Any]:
        import os
        import resource

        if float(xs[0][0]) < 0:  # ask for more than the limit: MemoryError
            try:
                bytearray(4 << 30)
            except MemoryError:
                os._exit(76)  # what a replica does on MemoryError: "memory limit"
            return ["unlimited"] * len(xs)
        return [resource.getrlimit(resource.RLIMIT_AS)[0]] * len(xs)

    conn.register_application("hungry-app", "doubles", "none", 3_000_000)
    deploy_python_closure(conn, "hungry", "1", "doubles", hungry, memory_limit="3Gi")
    conn.link_model_to_app("hungry-app", "hungry")
    eventually(
        lambda: predict(cm, "hungry-app", 1.0)["output"] == limit,
        what="the replica runs under its limit",
        timeout=BACK,
        ignoring=(httpx.HTTPError, AssertionError),
    )
    (before,) = cm.replica_states("hungry", "1")
    httpx.post(f"{cm.query_url}/hungry-app/predict", json={"input": [-1.0]}, timeout=30)

    def restarted() -> bool:
        (state,) = cm.replica_states("hungry", "1")
        return state.restarts > before.restarts and state.running and state.pid != before.pid

    eventually(restarted, what="the replica restarted", timeout=BACK)
    (after,) = cm.replica_states("hungry", "1")
    assert after.memory_limit_hit and "memory limit" in after.detail
    assert row(cm, "replica-hungry-1-r0")["reason"].startswith(f"memory limit ({limit} bytes)")
    eventually(
        lambda: predict(cm, "hungry-app", 1.0)["output"] == limit,
        what="the new replica serves, limited again",
        timeout=BACK,
        ignoring=(httpx.HTTPError, AssertionError),
    )
    conn.stop_models("hungry")


def test_the_supervision_state_is_in_redis_for_the_frontends(
    cluster: tuple[LocalContainerManager, Connection],
) -> None:
    import redis

    from admin.container_managers._credentials import LocalCredentialStore

    cm, _ = cluster
    creds = LocalCredentialStore(cm.data_dir).load()
    assert creds is not None
    client = redis.Redis(
        host="127.0.0.1", port=cm.redis_port, password=creds.redis_password, socket_timeout=5
    )

    def hash_now() -> dict[str, Any]:
        raw = client.hgetall("schooner:supervision")
        return {k.decode(): json.loads(v) for k, v in raw.items()}

    def published() -> bool:
        fields = hash_now()
        query = fields.get("query", {})
        return query.get("pid") == pid_of(cm, "query") and query.get("state") == "running"

    eventually(published, what="the query frontend's state in schooner:supervision", timeout=BACK)
    fields = hash_now()
    assert {"redis", "management", "query", "reconciler", "supervisor"} <= set(fields)
    assert {"state", "pid", "restarts", "reason", "since", "role"} <= set(fields["query"])
    assert "log_tail" not in fields["query"]  # a model's output stays in its log
    client.close()

    # The query frontend shows it in /status, as an operator looks.
    def shown() -> bool:
        body = httpx.get(
            f"{cm.query_url}/status",
            headers={"Authorization": f"Bearer {cm.admin_token()}"},
            timeout=10,
        ).json()
        processes = body["supervision"]["processes"]
        return processes["query"]["state"] == "running" and "redis" in processes

    eventually(shown, what="the supervision in /status", timeout=BACK, ignoring=(KeyError,))


@pytest.mark.parametrize("supervisor_killed", [False, True])
def test_stop_all_ends_the_supervisor_and_everything_under_it(
    tmp_path: Path, supervisor_killed: bool
) -> None:
    data_dir = tmp_path / "stopped"
    start_from_a_process_that_exits(data_dir, **ports.cluster_ports())
    cm = LocalContainerManager(data_dir=data_dir)
    running = {p["name"]: p["pid"] for p in cm.processes() if p["running"]}
    assert set(running) == {"supervisor", "redis", "management", "query", "reconciler"}
    if supervisor_killed:  # stop_all stops what it recorded, as without a supervisor
        os.kill(running["supervisor"], signal.SIGKILL)
        eventually(lambda: not alive(running["supervisor"]), what="the supervisor gone")
    Connection(cm).stop_all()
    assert not [pid for pid in running.values() if alive(pid)]
    assert cluster_processes(data_dir) == []
    assert not SupervisorFiles(data_dir).load_specs()  # nothing left to come back
    with pytest.raises(SchoonerError):
        Connection(LocalContainerManager(data_dir=data_dir)).connect()
    assert cluster_processes(data_dir) == []  # connect() resurrected nothing
    assert not [pid for pid in running.values() if alive(pid)]


def _rpc_pair() -> dict[str, int]:
    """Cluster ports whose rpc_port + 1 is free too (a second query frontend's)."""
    return {**ports.cluster_ports(), "rpc_port": ports.consecutive_free_ports(2)}


def test_two_query_frontends_share_the_port_and_one_killed_leaves_the_other_serving(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "two"
    start_from_a_process_that_exits(data_dir, query_frontends=2, **_rpc_pair())
    cm = LocalContainerManager(data_dir=data_dir)
    conn = Connection(cm)
    conn.connect()
    try:
        assert cm.query_frontends == 2
        conn.register_application("twice", "doubles", "-1", 2_000_000)
        deploy_python_closure(conn, "doubler", "1", "doubles", doubler())
        conn.link_model_to_app("twice", "doubler")
        # The replica registered with both frontends, under each one's id.
        frontends = {r["frontend"] for r in conn.get_all_model_replicas(verbose=True)}
        assert len(frontends) == 2
        eventually(lambda: answers(cm, "twice", 1.0), what="serving", timeout=BACK)

        # Hold the supervisor, so the killed frontend stays down while we ask the port.
        supervisor = psutil.Process(pid_of(cm, "supervisor"))
        victim = pid_of(cm, "query")
        supervisor.suspend()
        try:
            os.kill(victim, signal.SIGKILL)
            eventually(lambda: not cm_alive(cm, "query"), what="the frontend killed")
            for i in range(40):  # each a new connection: the kernel picks a live listener
                assert answers(cm, "twice", float(i))
        finally:
            supervisor.resume()
        eventually(came_back(cm, "query", victim), what="query back", timeout=BACK)

        # A rolling restart under load answers every query it accepted. A connection
        # the kernel had queued on the listener that closes but the frontend had not
        # yet accepted is reset (no HTTP answer at all): SO_REUSEPORT hands such
        # connections to another listener only with net.ipv4.tcp_migrate_req=1.
        errors: list[str] = []
        refused: list[str] = []
        served = [0]
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                try:
                    r = httpx.post(
                        f"{cm.query_url}/twice/predict", json={"input": [2.0]}, timeout=30
                    )
                    if r.status_code != 200 or r.json()["output"] != 4.0:
                        errors.append(r.text)
                    served[0] += 1
                except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError) as exc:
                    refused.append(repr(exc))  # before any answer: the client may retry
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

        pids = {pid_of(cm, "query"), pid_of(cm, "query-1")}
        worker = threading.Thread(target=load)
        worker.start()
        try:
            assert cli_main(["restart-query-frontends", "--data-dir", str(data_dir)]) == 0
        finally:
            stop.set()
            worker.join(60)
        assert not {pid_of(cm, "query"), pid_of(cm, "query-1")} & pids  # both restarted
        assert served[0] > 0
        assert errors == []  # no wrong answer, no 5xx, no timeout
        assert all("reset" in e.lower() or "refused" in e.lower() for e in refused), refused
        # An intended restart is not a crash.
        assert row(cm, "query-1")["restarts"] == 0
    finally:
        everything = [p["pid"] for p in cm.processes() if p["running"]]
        conn.stop_all()
        conn.close()
    assert not [pid for pid in everything if alive(pid)]
