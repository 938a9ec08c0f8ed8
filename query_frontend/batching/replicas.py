"""One connected model replica as the frontend sees it: identity, liveness, work in flight.

A registered replica is *in rotation* (it gets new batches) unless the liveness checks
took it out (``unavailable`` says why: silent, or stuck on a batch). Out of rotation it
stays registered: the batches it held were retried elsewhere (``abandoned``), and it
comes back once it has spoken again and answered every one of them — unless it was told
to restart (``restarting``: a batch timed out, or it was ejected), which it never
comes back from: its process exits and registers afresh.

``ReplicaHistory`` is what the frontend remembers of a replica id across its
connections: restarts seen (the same id back with another pid), why it last left, how
often it was ejected or timed out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from management_frontend.state.records import ReplicaRecord
from model_container.protocol import Hello, InputType
from query_frontend.batching.controllers import BatchSizeController, FixedController
from query_frontend.queries import ModelKey, Query


@dataclass(eq=False)
class Replica:
    identity: bytes  # the ZeroMQ routing id of its DEALER socket
    replica_id: str
    key: ModelKey
    input_type: InputType
    runtime: dict[str, str]
    pid: int
    last_seen: float  # loop.time() of the last message from it
    connected_at: float = field(default_factory=time.time)
    batcher: BatchSizeController = field(default_factory=lambda: FixedController(1))
    inflight: dict[int, list[Query]] = field(default_factory=dict)  # batch id -> queries
    sent_at: dict[int, float] = field(default_factory=dict)  # batch id -> loop.time()
    last_done: float = 0.0  # loop.time() of its last answer
    fd: int = -1  # the frontend's file descriptor of its connection (ZMQ_SRCFD), -1 unknown
    unavailable: str = ""  # why it is out of rotation; "" while in rotation
    unavailable_since: float = 0.0  # loop.time() when it was taken out of rotation
    # Batches retried elsewhere when it left rotation, which it may still answer.
    abandoned: dict[int, list[Query]] = field(default_factory=dict)
    removed: str = ""  # why it was removed, once it has been
    caps: tuple[str, ...] = ()  # what it declared it understands (``protocol.CAP_RESTART``)
    restarting: str = ""  # why it was told to restart; it never returns to rotation
    failures: int = 0  # batches failed in a row for a replica reason (crash, MemoryError)
    failing_since: float = 0.0  # loop.time() of the first of them
    last_success: float = -math.inf  # loop.time() of its last RESULT

    @classmethod
    def from_hello(
        cls, identity: bytes, hello: Hello, now: float, batcher: BatchSizeController
    ) -> Replica:
        return cls(
            identity=identity,
            replica_id=hello.replica_id,
            key=(hello.model_name, hello.model_version),
            input_type=hello.input_type,
            runtime=dict(hello.runtime),
            pid=hello.pid,
            last_seen=now,
            batcher=batcher,
            caps=hello.caps,
        )

    def observe_batch(self, batch_id: int, size: int, now: float) -> float | None:
        """Feed the batch's service time to the size controller, and return it.

        Service time runs from when the replica could start on it (sent, or its previous
        batch answered, whichever is later) until the answer arrived, so waiting behind
        another batch in flight is not counted as the cost of this one.
        """
        sent = self.sent_at.pop(batch_id, None)
        service: float | None = None
        if sent is not None:
            service = max(0.0, now - max(sent, self.last_done))
            self.batcher.observe(size, service)
        self.last_done = now
        return service

    @property
    def outstanding(self) -> int:
        return len(self.inflight)

    @property
    def available(self) -> bool:
        """Whether it is in rotation, i.e. may be given new batches."""
        return not self.unavailable

    def oldest_batch(self) -> tuple[int, float] | None:
        """The batch it has been working on longest (it runs them in order) and since
        when: sent, or its previous answer, whichever is later; None if it holds none."""
        held = [b for b in (*self.inflight, *self.abandoned) if b in self.sent_at]
        if not held:
            return None
        batch_id = min(held)
        return batch_id, max(self.sent_at[batch_id], self.last_done)

    def record(self, frontend: str) -> ReplicaRecord:
        """What the control plane is told of it (``{p}:replicas``)."""
        return ReplicaRecord(
            replica_id=self.replica_id,
            model_name=self.key[0],
            model_version=self.key[1],
            input_type=str(self.input_type),
            frontend=frontend,
            pid=self.pid,
            runtime=self.runtime,
            connected_at=self.connected_at,
        )


@dataclass(slots=True)
class ReplicaHistory:
    """What the frontend remembers of one replica id of a model version."""

    pid: int
    started_ms: int = 0  # when its process started, as its HELLO said (0: unknown)
    restarts: int = 0  # times it came back as another process (pid or start time)
    timeouts: int = 0  # batches that ran past the model's batch timeout on it
    ejections: int = 0  # times it was ejected for failing while a sibling succeeded
    last_removal: str = ""  # why its last connection was removed

    def status(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "restarts": self.restarts,
            "timeouts": self.timeouts,
            "ejections": self.ejections,
            "last_removal": self.last_removal or None,
        }
