"""The query frontend's side of the wire protocol, whatever carries it, for the tests that
run a real model container against a stand-in frontend (``docs/wire-protocol.md``).

``FrontendSide`` is the protocol half every stand-in shares: it welcomes HELLOs, answers
the heartbeats of replicas it welcomed and REJECTs those of strangers (as the real
frontend must, §5), sends PREDICTs of doubles and reads what comes back. A subclass
carries the messages and says how it names a replica's connection (``I``):
``fake_frontend.FakeFrontend`` on a ZeroMQ ROUTER (identity bytes),
``unix_frontend.UnixFrontend`` on a unix stream socket (a counter, §1.3).
``serving_in_a_thread`` runs an in-process ``ModelContainer`` (``doubles_config``)
against either. Every wait
polls with a deadline.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Hashable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

from model_container import ContainerConfig, ModelContainer, protocol
from model_container.protocol import Heartbeat, Hello, InputType, Message, Result

STARTUP_S = 20.0  # a cold interpreter importing numpy on a loaded machine
REPLY_S = 10.0
DOUBLES = np.dtype("<f8")

M = TypeVar("M", bound=Message)
I = TypeVar("I", bound=Hashable)  # noqa: E741  (the name of a replica's connection)


def outputs_of(result: Result) -> list[Any]:
    return [orjson.loads(item) for item in protocol.split_items(result.lengths, result.data)]


def doubles_config(
    frontend: str,
    secrets_dir: object,
    *,
    model_name: str = "inproc",
    replica_id: str = "inproc-0",
    **settings: Any,
) -> ContainerConfig:
    """The config of a container serving version 1 of ``model_name`` (doubles) as
    ``replica_id``, to ``frontend``, with the replica keys in ``secrets_dir``."""
    return ContainerConfig(
        frontend=frontend,
        model_name=model_name,
        model_version="1",
        input_type=InputType.DOUBLES,
        replica_id=replica_id,
        secrets_dir=str(secrets_dir),
        **settings,
    )


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


class FrontendSide(Generic[I]):
    """The protocol over a transport: a subclass gives ``address``, ``send`` and
    ``_next`` (the next message, as it came)."""

    def __init__(self) -> None:
        self.welcomed: set[I] = set()
        self.heartbeats = 0
        self.answer_heartbeats = True  # False: a hung frontend, silent to heartbeats
        self.closed = False

    @property
    def address(self) -> str:
        raise NotImplementedError

    def send(self, identity: I, msg: Message) -> None:
        raise NotImplementedError

    def _next(self, deadline: float, what: str) -> tuple[I, Message]:
        """The next message to arrive before ``deadline`` (AssertionError naming ``what``
        if none does)."""
        raise NotImplementedError

    def _can_reply(self, identity: I) -> bool:
        """Whether a reply to ``identity`` has somewhere to go."""
        return True

    def recv(self, deadline: float, what: str = "message") -> tuple[I, Message]:
        """The next message, answering it first if it is a heartbeat."""
        identity, msg = self._next(deadline, what)
        if isinstance(msg, Heartbeat):
            self.heartbeats += 1
            if self.answer_heartbeats and self._can_reply(identity):
                known = identity in self.welcomed
                self.send(
                    identity,
                    Heartbeat() if known else protocol.Reject("not registered: send HELLO"),
                )
        return identity, msg

    def expect(
        self,
        kind: type[M],
        timeout_s: float = REPLY_S,
        ignore: tuple[type[Message], ...] = (Heartbeat, Hello),
    ) -> tuple[I, M]:
        """The next message of ``kind``, skipping ``ignore``d types, within the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            identity, msg = self.recv(deadline, kind.__name__)
            if isinstance(msg, kind):
                return identity, msg
            assert isinstance(msg, ignore), f"expected {kind.__name__}, got {msg!r}"

    def welcome(self, identity: I, heartbeat_ms: int) -> None:
        self.send(identity, protocol.Welcome(heartbeat_ms))
        self.welcomed.add(identity)

    def register(self, heartbeat_ms: int = 1000) -> tuple[I, Hello]:
        """Wait for a HELLO and welcome its sender."""
        identity, hello = self.expect(Hello, STARTUP_S, ignore=(Heartbeat,))
        self.welcome(identity, heartbeat_ms)
        return identity, hello

    def predict(self, identity: I, batch_id: int, inputs: list[list[float]]) -> None:
        arrays = [np.asarray(x, dtype=DOUBLES) for x in inputs]
        lengths, data = protocol.pack_arrays(arrays, DOUBLES)
        self.send(
            identity, protocol.Predict(batch_id, protocol.InputType.DOUBLES, lengths, data.data)
        )

    def answer(self, identity: I, batch_id: int, inputs: list[list[float]]) -> list[Any]:
        """Send a batch and return the outputs of its RESULT."""
        self.predict(identity, batch_id, inputs)
        _, result = self.expect(Result)
        assert result.batch_id == batch_id
        return outputs_of(result)
