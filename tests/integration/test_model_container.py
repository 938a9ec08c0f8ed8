"""The real model container process against a real ZeroMQ ROUTER standing in for the frontend.

Each test starts ``python -m model_container`` on a closure bundle written in tmp_path
and plays the frontend's side of the wire protocol with ``fake_frontend.FakeFrontend``.
Every wait polls with a deadline; every socket and context is closed with linger 0.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from credentials import make_cluster_secrets
from fake_frontend import FakeFrontend
from frontend_side import REPLY_S, STARTUP_S, doubles_config, outputs_of, serving_in_a_thread
from polling import eventually

import model_container
from model_container import (
    ModelContainer,
    protocol,
    runtime_versions,
    write_closure_bundle,
)
from model_container.bundle import bundle_digest
from model_container.protocol import (
    CAP_RESTART,
    Error,
    ErrorKind,
    Goodbye,
    Heartbeat,
    Hello,
    InputType,
    Predict,
    Reject,
    Result,
)

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def make_model() -> Callable[[Any], Any]:
    """A model whose first input's first element picks a behaviour; otherwise it sums.

    Defined inside a function so that cloudpickle pickles it by value: the container
    process cannot import this test module.
    """

    def model(xs: Any) -> Any:
        import time as _time

        first = float(xs[0][0]) if len(xs) and len(xs[0]) else 0.0
        if first == -1:
            raise ValueError(f"negative input {first}")
        if first == -2:
            return [0.0] * (len(xs) - 1)
        if first == -3:
            return [{1, 2} for _ in xs]
        if first == -4:
            _time.sleep(float(xs[0][1]))
        return [float(np.sum(x)) for x in xs]

    return model


@pytest.fixture
def frontend(tmp_path: Path) -> Iterator[FakeFrontend]:
    fake = FakeFrontend(secrets=make_cluster_secrets(tmp_path / "cluster"))
    yield fake
    fake.close()


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    write_closure_bundle(path, make_model(), InputType.DOUBLES, ["numpy"])
    return path


class ContainerProcess:
    def __init__(self, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.proc = proc
        self.log = log

    @property
    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout_s: float = REPLY_S) -> int:
        return self.proc.wait(timeout=timeout_s)


_RPC_ENV = ("SCHOONER_SECRETS_DIR", "SCHOONER_INSECURE_RPC")


@pytest.fixture
def start_container(
    tmp_path: Path, frontend: FakeFrontend
) -> Iterator[Callable[..., ContainerProcess]]:
    """Start ``python -m model_container`` with these flags, and by default the
    ``frontend``'s cluster keys (``secrets_dir=None``: none at all)."""
    started: list[tuple[ContainerProcess, Any]] = []

    def start(
        *args: str, env: dict[str, str] | None = None, **flags: str | int | Path | None
    ) -> ContainerProcess:
        """Start the container; like a manager, pass the digest of ``bundle`` as it is now
        unless the test gives one (or ``--no-verify-bundle``)."""
        given = flags.get("bundle")
        unchecked = "bundle_sha256" in flags or "--no-verify-bundle" in args
        if given and not unchecked and Path(given).is_dir():
            flags["bundle_sha256"] = bundle_digest(given)
        log = tmp_path / f"container-{len(started)}.log"
        argv = [sys.executable, "-m", "model_container", *args]
        flags.setdefault("secrets_dir", str(frontend.secrets.replica_dir))
        for flag, value in flags.items():
            if value is not None:
                argv += [f"--{flag.replace('_', '-')}", str(value)]
        inherited = {k: v for k, v in os.environ.items() if k not in _RPC_ENV}
        full_env = {**inherited, **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
        stderr = log.open("wb")
        proc = subprocess.Popen(argv, stdout=stderr, stderr=stderr, env=full_env, cwd=tmp_path)
        container = ContainerProcess(proc, log)
        started.append((container, stderr))
        return container

    yield start
    for container, stderr in started:
        if container.proc.poll() is None:
            container.proc.kill()
        container.proc.wait(timeout=REPLY_S)
        stderr.close()
        print(f"--- {container.log.name} ---\n{container.stderr}")


@pytest.fixture
def container(
    start_container: Callable[..., ContainerProcess], bundle: Path, frontend: FakeFrontend
) -> ContainerProcess:
    return start_container(
        bundle=bundle,
        frontend=frontend.address,
        name="summer",
        version="v3",
        input_type="doubles",
        replica_id="summer-0",
        heartbeat_ms=250,
        log_level="DEBUG",
    )


# -------------------------------------------------------------------------- tests


def test_registers_with_hello(container: ContainerProcess, frontend: FakeFrontend) -> None:
    _, hello = frontend.register()
    assert hello == Hello(
        model_name="summer",
        model_version="v3",
        input_type=InputType.DOUBLES,
        replica_id="summer-0",
        runtime=runtime_versions(),
        pid=container.proc.pid,
        heartbeat_ms=250,
        caps=(CAP_RESTART,),  # it exits on RESTART, and arms a watchdog on "to_ms"
        started_ms=hello.started_ms,
    )
    assert 0 < hello.started_ms <= time.time() * 1000


def test_configuration_from_environment(
    start_container: Callable[..., ContainerProcess], bundle: Path, frontend: FakeFrontend
) -> None:
    env = {
        "SCHOONER_BUNDLE": str(bundle),
        "SCHOONER_BUNDLE_SHA256": bundle_digest(bundle),
        "SCHOONER_FRONTEND": frontend.address,
        "SCHOONER_MODEL_NAME": "envmodel",
        "SCHOONER_MODEL_VERSION": "7",
        "SCHOONER_INPUT_TYPE": "doubles",
        "SCHOONER_REPLICA_ID": "env-replica",
        "SCHOONER_SECRETS_DIR": str(frontend.secrets.replica_dir),
    }
    start_container(env=env, secrets_dir=None)
    _, hello = frontend.register()
    assert hello.model_name == "envmodel"
    assert hello.model_version == "7"
    assert hello.replica_id == "env-replica"


def test_batch_of_doubles(container: ContainerProcess, frontend: FakeFrontend) -> None:
    identity, _ = frontend.register()
    frontend.predict(identity, 41, [[1.0, 2.0], [3.0, 4.5]])
    _, result = frontend.expect(Result)
    assert result.batch_id == 41
    assert outputs_of(result) == [3.0, 7.5]
    frontend.predict(identity, 42, [[1.0], [2.0, 3.0, 4.0]])  # ragged
    _, result = frontend.expect(Result)
    assert (result.batch_id, outputs_of(result)) == (42, [1.0, 9.0])
    # The RESULT says how long the model ran: at least the 20 ms this batch makes it sleep.
    frontend.predict(identity, 43, [[-4.0, 0.02]])
    _, result = frontend.expect(Result)
    assert (result.batch_id, outputs_of(result)) == (43, [-3.98])
    assert result.model_micros >= 20_000


def test_model_that_raises_gives_error_and_next_batch_succeeds(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register()
    frontend.predict(identity, 1, [[-1.0], [2.0]])
    _, error = frontend.expect(Error)
    # The type on its own, so that a frontend can tell clients it without the message.
    expected = Error(1, ErrorKind.MODEL_RAISED, "ValueError: negative input -1.0", "ValueError")
    assert error == expected
    frontend.predict(identity, 2, [[5.0]])
    _, result = frontend.expect(Result)
    assert (result.batch_id, outputs_of(result)) == (2, [5.0])
    assert "Traceback" in container.stderr  # the traceback is logged


def test_wrong_output_count_is_bad_output(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register()
    frontend.predict(identity, 3, [[-2.0], [1.0], [1.0], [1.0]])
    _, error = frontend.expect(Error)
    assert error == Error(3, ErrorKind.BAD_OUTPUT, "model returned 3 outputs for a batch of 4")


def test_unserialisable_output_is_bad_output(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register()
    frontend.predict(identity, 4, [[-3.0]])
    _, error = frontend.expect(Error)
    assert (error.batch_id, error.kind) == (4, ErrorKind.BAD_OUTPUT)
    assert "output 0 is not JSON-serialisable (set)" in error.message


def test_undecodable_payload_is_bad_input(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register()
    twelve_bytes = b"\0" * 12  # one and a half doubles
    frontend.send(identity, Predict(5, InputType.DOUBLES, b"\x02\0\0\0", twelve_bytes))
    _, error = frontend.expect(Error)
    assert (error.batch_id, error.kind) == (5, ErrorKind.BAD_INPUT)
    head = protocol.encode(Predict(6, InputType.DOUBLES, b"\x01\0\0\0", b""))[0]
    frontend.send_frames(identity, [bytes(head), b"\x01\0"])  # lengths frame too short
    _, error = frontend.expect(Error)
    assert (error.batch_id, error.kind) == (6, ErrorKind.BAD_INPUT)
    frontend.predict(identity, 7, [[1.0]])
    assert frontend.expect(Result)[1].batch_id == 7


def test_predict_before_welcome_is_not_ready(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.expect(Hello, STARTUP_S)
    frontend.predict(identity, 8, [[1.0]])
    _, error = frontend.expect(Error)
    assert (error.batch_id, error.kind) == (8, ErrorKind.NOT_READY)


def test_heartbeats_keep_flowing_during_a_long_batch(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 9, [[-4.0, 1.0]])  # sleeps 1 s
    _, result = frontend.expect(Result)
    assert outputs_of(result) == [-3.0]
    assert frontend.heartbeats >= 5


def test_after_a_long_batch_it_serves_on_and_obeys_restart(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    """The model runs on the thread that owns the socket; a stand-in thread serves the
    connection while a batch runs for several heartbeat intervals, then hands it back."""
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 20, [[-4.0, 0.6]])  # sleeps 0.6 s: six intervals
    frontend.predict(identity, 21, [[1.0, 2.0]])  # read by the stand-in, run after
    assert [frontend.expect(Result)[1].batch_id for _ in range(2)] == [20, 21]
    assert frontend.answer(identity, 22, [[3.0]]) == [3.0]
    frontend.send(identity, protocol.Restart("testing"))
    _, goodbye = frontend.expect(Goodbye)
    assert goodbye.reason == f"restart requested by {frontend.address}: testing"
    assert container.wait() == protocol.EXIT_RESTART_REQUESTED


def test_restart_is_obeyed_while_a_batch_hangs(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 23, [[-4.0, 600.0]])  # sleeps far past the test's deadlines
    heartbeats = frontend.heartbeats
    # Heartbeats still flow while it hangs (the stand-in sends them) ...
    while frontend.heartbeats < heartbeats + 3:
        frontend.expect(Heartbeat, ignore=())
    # ... and RESTART ends it, after GOODBYE, without waiting for the batch.
    frontend.send(identity, protocol.Restart("batch timeout: testing"))
    _, goodbye = frontend.expect(Goodbye)
    assert goodbye.reason.endswith("batch timeout: testing")
    assert container.wait() == protocol.EXIT_RESTART_REQUESTED


def test_sigterm_during_a_hung_batch_says_goodbye_and_exits_0(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register(heartbeat_ms=100)
    frontend.predict(identity, 24, [[-4.0, 600.0]])
    frontend.expect(Heartbeat, ignore=())  # the batch is running
    container.proc.send_signal(signal.SIGTERM)
    assert frontend.expect(Goodbye)[1] == Goodbye("received SIGTERM")
    # Its stop timeout (5 s) passes and it exits without the batch's answer.
    assert container.wait() == 0


def test_the_watchdog_of_a_quick_batch_never_fires_after_it(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    """The watchdog timer outlives a batch (arming it per batch costs a thread); the
    idle loop disarms it before it would fire."""
    identity, _ = frontend.register(heartbeat_ms=10_000)  # not read while the test sleeps
    lengths, data = protocol.pack_arrays([np.array([1.0, 2.0])], np.dtype("<f8"))
    for batch_id in (30, 31):
        # A 100 ms timeout: the watchdog would fire 1.15 to 1.44 s after the batch.
        frontend.send(identity, Predict(batch_id, InputType.DOUBLES, lengths, data, 100))
        assert outputs_of(frontend.expect(Result)[1]) == [3.0]
        time.sleep(2.0)  # idle for longer than that
        assert container.proc.poll() is None, container.stderr[-2000:]


def test_batches_queue_and_are_answered_in_order(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    identity, _ = frontend.register()
    frontend.predict(identity, 10, [[-4.0, 0.3]])
    frontend.predict(identity, 11, [[1.0]])
    frontend.predict(identity, 12, [[2.0]])
    ids = [frontend.expect(Result)[1].batch_id for _ in range(3)]
    assert ids == [10, 11, 12]


def test_reregisters_with_a_restarted_frontend(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    frontend.register(heartbeat_ms=100)
    frontend.close()
    restarted = FakeFrontend(port=frontend.port, secrets=frontend.secrets)
    try:
        identity, hello = restarted.register(heartbeat_ms=100)
        assert hello.replica_id == "summer-0"
        restarted.predict(identity, 13, [[2.0, 2.0]])
        _, result = restarted.expect(Result)
        assert outputs_of(result) == [4.0]
    finally:
        restarted.close()


def test_silent_frontend_makes_it_reregister(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    first, _ = frontend.register(heartbeat_ms=100)
    frontend.answer_heartbeats = False  # the frontend is hung: 3 intervals of silence
    second, _ = frontend.expect(Hello, ignore=(Heartbeat,))
    while second == first:  # a HELLO repeated before our WELCOME arrived, from the old socket
        second, _ = frontend.expect(Hello, ignore=(Heartbeat,))
    # It came back on a new socket (a new identity), before the test's deadline.


def test_reject_makes_it_reregister(container: ContainerProcess, frontend: FakeFrontend) -> None:
    first, _ = frontend.register()
    frontend.send(first, Reject("unknown replica: send HELLO to register"))
    second, _ = frontend.register()
    while second == first:  # a HELLO repeated before our WELCOME arrived, from the old socket
        second, _ = frontend.register()
    frontend.predict(second, 14, [[1.0]])
    assert frontend.expect(Result)[1].batch_id == 14


def test_sigterm_sends_goodbye_and_exits_0(
    container: ContainerProcess, frontend: FakeFrontend
) -> None:
    frontend.register()
    container.proc.send_signal(signal.SIGTERM)
    assert frontend.expect(Goodbye)[1] == Goodbye("received SIGTERM")
    assert container.wait() == 0


def test_incompatible_bundle_exits_2_naming_both_versions(
    start_container: Callable[..., ContainerProcess], bundle: Path, frontend: FakeFrontend
) -> None:
    doc = json.loads((bundle / "model.json").read_text())
    doc["runtime"]["python"] = "3.10.13"
    (bundle / "model.json").write_text(json.dumps(doc))
    proc = start_container(bundle=bundle, frontend=frontend.address, name="m", version="1")
    assert proc.wait(STARTUP_S) == 2
    stderr = proc.stderr
    assert "Python 3.10.13" in stderr
    assert f"Python {runtime_versions()['python']}" in stderr
    assert "Traceback" not in stderr


def test_missing_bundle_exits_2(
    start_container: Callable[..., ContainerProcess], tmp_path: Path, frontend: FakeFrontend
) -> None:
    proc = start_container(
        bundle=tmp_path / "nowhere",
        bundle_sha256="0" * 64,
        frontend=frontend.address,
        name="m",
        version="1",
    )
    assert proc.wait(STARTUP_S) == 2
    assert "no model bundle directory at" in proc.stderr
    assert "Traceback" not in proc.stderr


class MakesMarker:
    """Unpickling this runs ``os.mkdir(path)``: what a planted pickle would do, harmlessly."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


def tamper(bundle: Path, marker: Path) -> None:
    """Replace the bundle's pickle with one whose unpickling creates ``marker``."""
    (bundle / "func.pkl").write_bytes(pickle.dumps(MakesMarker(marker)))


def test_a_bundle_changed_after_deploy_is_refused_and_never_unpickled(
    start_container: Callable[..., ContainerProcess],
    bundle: Path,
    frontend: FakeFrontend,
    tmp_path: Path,
) -> None:
    deployed = bundle_digest(bundle)
    marker = tmp_path / "tampered-code-ran"
    tamper(bundle, marker)
    flags = {"frontend": frontend.address, "name": "m", "version": "1"}
    proc = start_container(bundle=bundle, bundle_sha256=deployed, **flags)
    assert proc.wait(STARTUP_S) == 2
    stderr = proc.stderr
    assert f"was deployed with {deployed}" in stderr
    assert "changed after it was deployed" in stderr
    assert "Traceback" not in stderr
    assert not marker.exists(), "the tampered pickle was loaded"
    # Control: without the check the same bundle does run the planted code.
    unchecked = start_container("--no-verify-bundle", bundle=bundle, **flags)
    assert unchecked.wait(STARTUP_S) == 2
    assert marker.is_dir()


def test_a_wrong_digest_on_the_command_line_is_refused(
    start_container: Callable[..., ContainerProcess], bundle: Path, frontend: FakeFrontend
) -> None:
    wrong = "0" * 64
    proc = start_container(
        bundle=bundle, bundle_sha256=wrong, frontend=frontend.address, name="m", version="1"
    )
    assert proc.wait(STARTUP_S) == 2
    assert f"has sha256 {bundle_digest(bundle)}, but this model version was deployed with " in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr


def test_a_digest_that_is_not_a_sha256_is_a_usage_error(
    start_container: Callable[..., ContainerProcess], bundle: Path, frontend: FakeFrontend
) -> None:
    proc = start_container(
        bundle=bundle, bundle_sha256="../../etc", frontend=frontend.address, name="m", version="1"
    )
    assert proc.wait(STARTUP_S) == 2
    assert "--bundle-sha256" in proc.stderr and "64 lowercase hex digits" in proc.stderr


def test_without_a_digest_the_bundle_is_refused_unless_checking_is_switched_off(
    start_container: Callable[..., ContainerProcess], bundle: Path, frontend: FakeFrontend
) -> None:
    flags = {"frontend": frontend.address, "name": "m", "version": "1"}
    proc = start_container(bundle=bundle, bundle_sha256="", **flags)
    assert proc.wait(STARTUP_S) == 2
    assert "no bundle digest was given" in proc.stderr
    assert "--no-verify-bundle" in proc.stderr
    start_container("--no-verify-bundle", bundle=bundle, **flags)
    _, hello = frontend.register()
    assert hello.model_name == "m"


def test_without_keys_it_refuses_to_start(
    start_container: Callable[..., ContainerProcess], bundle: Path, frontend: FakeFrontend
) -> None:
    proc = start_container(
        bundle=bundle, frontend=frontend.address, name="m", version="1", secrets_dir=None
    )
    assert proc.wait(STARTUP_S) == 2
    assert "no secrets directory was given: pass --secrets-dir" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_with_another_clusters_keys_it_never_registers(
    start_container: Callable[..., ContainerProcess],
    bundle: Path,
    frontend: FakeFrontend,
    tmp_path: Path,
) -> None:
    other = make_cluster_secrets(tmp_path / "other-cluster")
    proc = start_container(
        bundle=bundle,
        frontend=frontend.address,
        name="m",
        version="1",
        secrets_dir=other.replica_dir,
    )
    # The handshake fails before any message: the frontend never sees a HELLO ...
    with pytest.raises(AssertionError, match="no Hello"):
        frontend.expect(Hello, timeout_s=3, ignore=())
    # ... and the replica says why, without any key in its log.
    eventually(lambda: "the RPC handshake with" in proc.stderr, "the refusal in the log", 20)
    assert proc.proc.poll() is None  # still trying: the keys may be fixed by a restart
    for value in other.creds.replica_files().values():
        assert value not in proc.stderr


def test_in_process_container_stops_with_goodbye(frontend: FakeFrontend) -> None:
    config = doubles_config(frontend.address, frontend.secrets.replica_dir)
    container = ModelContainer(config, make_model())
    with serving_in_a_thread(container):
        identity, hello = frontend.register()
        assert hello.pid == os.getpid()
        frontend.predict(identity, 15, [[1.0, 1.0]])
        assert outputs_of(frontend.expect(Result)[1]) == [2.0]
    assert frontend.expect(Goodbye)[1] == Goodbye("test over")


def test_in_process_container_says_goodbye_while_a_batch_runs(frontend: FakeFrontend) -> None:
    """Stopped during a batch, it says GOODBYE at once; embedded in a program (not on the
    main thread), ``run`` returns when the batch ends, and nothing calls ``exit``."""
    running, release = threading.Event(), threading.Event()

    def model(xs: Any) -> Any:
        running.set()
        release.wait(REPLY_S)
        return [0.0 for _ in xs]

    config = doubles_config(
        frontend.address,
        frontend.secrets.replica_dir,
        replica_id="inproc-1",
        heartbeat_ms=100,
        stop_timeout_s=0.2,
    )
    codes: list[int] = []
    container = ModelContainer(config, model, exit=codes.append)
    thread = threading.Thread(target=container.run, name="container-under-test")
    thread.start()
    try:
        identity, _ = frontend.register(heartbeat_ms=100)
        frontend.predict(identity, 25, [[1.0]])
        assert running.wait(REPLY_S)
        container.stop("test over")
        assert frontend.expect(Goodbye)[1] == Goodbye("test over")
        assert thread.is_alive()  # still in the model
    finally:
        release.set()
        thread.join(REPLY_S)
    assert not thread.is_alive()
    assert codes == []


def test_imports_without_frontend_dependencies() -> None:
    blocked = ["fastapi", "starlette", "uvicorn", "redis", "docker", "kubernetes", "httpx"]
    code = (
        "import sys\n"
        f"for name in {blocked!r}:\n"
        "    sys.modules[name] = None  # any import of it now fails\n"
        "import model_container, model_container.cli, model_container.server\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, timeout=STARTUP_S
    )
    assert done.returncode == 0, done.stderr.decode()


def test_public_api() -> None:
    assert set(model_container.__all__) == {
        "PROTOCOL_VERSION",
        "BundleError",
        "BundleInfo",
        "BundleKind",
        "ContainerConfig",
        "ErrorKind",
        "IncompatibleRuntimeError",
        "InputType",
        "ModelContainer",
        "MsgType",
        "PredictFunction",
        "ProtocolError",
        "check_compatible",
        "current_request_ids",
        "load_predict_function",
        "read_bundle_info",
        "runtime_versions",
        "serve",
        "write_closure_bundle",
        "write_entry_point_bundle",
        "write_onnx_bundle",
    }
    for name in model_container.__all__:
        assert hasattr(model_container, name)
