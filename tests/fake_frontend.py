"""The query frontend's side of the wire protocol on a real ZeroMQ ROUTER, for the tests
that run a real model container against it (``docs/wire-protocol.md``).

``FakeFrontend`` carries ``frontend_side.FrontendSide`` (HELLOs welcomed, heartbeats
answered or strangers REJECTed, PREDICTs of doubles sent) over a ROUTER. It has a ZeroMQ
context of its own so that ``close()`` can terminate it, which releases the port before
returning (closing a socket alone releases it asynchronously): a "restarted" frontend
can bind the same port at once. Like the real one it is a CURVE server that admits only
the cluster's client key (``query_frontend.rpc.auth``): ``secrets`` are the cluster's
(``credentials.make_cluster_secrets``; fresh ones if not given), and a replica talks to
it with ``--secrets-dir fake.secrets.replica_dir``. Every wait polls with a deadline.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import zmq
from credentials import ClusterSecrets, make_cluster_secrets
from frontend_side import FrontendSide
from zmq.auth.thread import ThreadAuthenticator

from model_container import protocol
from model_container.protocol import Message
from model_container.rpc_keys import ZAP_DOMAIN, ServerKeys


class FakeFrontend(FrontendSide[bytes]):
    """A ROUTER bound on ``host`` (``[::1]`` for IPv6) and ``port`` (a random free one
    if None)."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        secrets: ClusterSecrets | None = None,
    ) -> None:
        super().__init__()
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

    @property
    def address(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def send(self, identity: bytes, msg: Message) -> None:
        self.socket.send_multipart([identity, *protocol.encode(msg)], copy=False)

    def send_frames(self, identity: bytes, frames: list[bytes]) -> None:
        self.socket.send_multipart([identity, *frames])

    def _next(self, deadline: float, what: str) -> tuple[bytes, Message]:
        remaining_ms = int((deadline - time.monotonic()) * 1000)
        if remaining_ms <= 0 or not self.socket.poll(remaining_ms):
            raise AssertionError(f"no {what} at {self.address} before the deadline")
        identity, *frames = self.socket.recv_multipart()
        return identity, protocol.decode(frames)

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
