"""The query frontend's side of the wire protocol on a real ZeroMQ ROUTER, for the tests
that run a real model container against it (``docs/wire-protocol.md``).

``FakeFrontend`` does as much of a frontend as those tests need: it welcomes HELLOs,
answers the heartbeats of replicas it welcomed and REJECTs those of strangers (as the
real frontend must, §5), sends PREDICTs of doubles and reads what comes back. Each has a
ZeroMQ context of its own so that ``close()`` can terminate it, which releases the port
before returning (closing a socket alone releases it asynchronously): a "restarted"
frontend can bind the same port at once. Like the real one it is a CURVE server that
admits only the cluster's client key (``query_frontend.rpc.auth``): ``secrets`` are the
cluster's (``credentials.make_cluster_secrets``; fresh ones if not given), and a replica
talks to it with ``--secrets-dir fake.secrets.replica_dir``. ``serving_in_a_thread``
runs an in-process ``ModelContainer`` against it. Every wait polls with a deadline.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import zmq
from credentials import ClusterSecrets, make_cluster_secrets
from zmq.auth.thread import ThreadAuthenticator

from model_container import ModelContainer, protocol
from model_container.protocol import (
    Heartbeat,
    Hello,
    InputType,
    Message,
    Predict,
    Reject,
    Result,
    Welcome,
)
from model_container.rpc_keys import ZAP_DOMAIN, ServerKeys

STARTUP_S = 20.0  # a cold interpreter importing numpy on a loaded machine
REPLY_S = 10.0
DOUBLES = np.dtype("<f8")

M = TypeVar("M", bound=Message)


def outputs_of(result: Result) -> list[Any]:
    return [orjson.loads(item) for item in protocol.split_items(result.lengths, result.data)]


@contextlib.contextmanager
def serving_in_a_thread(container: ModelContainer) -> Iterator[None]:
    """Run ``container`` on a thread of this process; on leaving, stop it ("test over")
    and check that it returned."""
    thread = threading.Thread(target=container.run, name="container-under-test")
    thread.start()
    try:
        yield
    finally:
        container.stop("test over")
        thread.join(REPLY_S)
    assert not thread.is_alive(), "the container did not stop"


class FakeFrontend:
    """A ROUTER bound on ``host`` (``[::1]`` for IPv6) and ``port`` (a random free one
    if None)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        secrets: ClusterSecrets | None = None,
    ) -> None:
        self._tmp: str | None = None
        if secrets is None:
            self._tmp = tempfile.mkdtemp(prefix="fake-frontend-")
            secrets = make_cluster_secrets(Path(self._tmp))
        self.secrets = secrets
        keys = ServerKeys.load(str(secrets.frontend_dir))
        self.context: zmq.Context[Any] = zmq.Context()
        self.auth = ThreadAuthenticator(self.context)
        self.auth.start()
        self.auth.configure_curve_callback(ZAP_DOMAIN, _OneKey(keys.client_public))
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        keys.apply(self.socket)
        if host.startswith("["):
            self.socket.setsockopt(zmq.IPV6, 1)
        self.host = host
        if port is None:
            self.port = self.socket.bind_to_random_port(f"tcp://{host}")
        else:
            self.socket.bind(f"tcp://{host}:{port}")
            self.port = port
        self.welcomed: set[bytes] = set()
        self.heartbeats = 0
        self.answer_heartbeats = True  # False: a hung frontend, silent to heartbeats
        self.closed = False

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def send(self, identity: bytes, msg: Message) -> None:
        self.socket.send_multipart([identity, *protocol.encode(msg)], copy=False)

    def send_frames(self, identity: bytes, frames: list[bytes]) -> None:
        self.socket.send_multipart([identity, *frames])

    def recv(self, deadline: float, what: str = "message") -> tuple[bytes, Message]:
        """The next message, answering it first if it is a heartbeat."""
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not self.socket.poll(remaining_ms):
            raise AssertionError(f"no {what} at {self.address} before the deadline")
        identity, *frames = self.socket.recv_multipart()
        msg = protocol.decode(frames)
        if isinstance(msg, Heartbeat):
            self.heartbeats += 1
            if self.answer_heartbeats:
                known = identity in self.welcomed
                self.send(identity, Heartbeat() if known else Reject("not registered: send HELLO"))
        return identity, msg

    def expect(
        self,
        kind: type[M],
        timeout_s: float = REPLY_S,
        ignore: tuple[type[Message], ...] = (Heartbeat, Hello),
    ) -> tuple[bytes, M]:
        """The next message of ``kind``, skipping ``ignore``d types, within the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            identity, msg = self.recv(deadline, kind.__name__)
            if isinstance(msg, kind):
                return identity, msg
            assert isinstance(msg, ignore), f"expected {kind.__name__}, got {msg!r}"

    def welcome(self, identity: bytes, heartbeat_ms: int) -> None:
        self.send(identity, Welcome(heartbeat_ms))
        self.welcomed.add(identity)

    def register(self, heartbeat_ms: int = 1000) -> tuple[bytes, Hello]:
        """Wait for a HELLO and welcome its sender."""
        identity, hello = self.expect(Hello, STARTUP_S, ignore=(Heartbeat,))
        self.welcome(identity, heartbeat_ms)
        return identity, hello

    def predict(self, identity: bytes, batch_id: int, inputs: list[list[float]]) -> None:
        arrays = [np.asarray(x, dtype=DOUBLES) for x in inputs]
        lengths, data = protocol.pack_arrays(arrays, DOUBLES)
        self.send(identity, Predict(batch_id, InputType.DOUBLES, lengths, data.data))

    def answer(self, identity: bytes, batch_id: int, inputs: list[list[float]]) -> list[Any]:
        """Send a batch and return the outputs of its RESULT."""
        self.predict(identity, batch_id, inputs)
        _, result = self.expect(Result)
        assert result.batch_id == batch_id
        return outputs_of(result)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.socket.close(linger=0)
            self.auth.stop()
            self.context.term()
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)


class _OneKey:
    def __init__(self, client_public: bytes) -> None:
        self.client_public = client_public

    def callback(self, domain: str, key: bytes) -> bool:
        return key == self.client_public
