"""Which replicas are fit for work: the frontend's liveness rules, as pure logic.

Three ways a replica stops answering, and what the frontend does about each:

* **Its connection closes** (the process died, or the container or machine went away
  cleanly): ``rpc.server`` learns it from the ROUTER's socket monitor at once and
  removes the replica; see ``RpcServer``. Nothing here.
* **Silent**: nothing at all has arrived from it for ``SILENT_INTERVALS`` heartbeat
  intervals (the process is stopped, hung with the GIL held, or cut off). It is taken out
  of rotation and what it held is retried elsewhere; it comes back as soon as it speaks
  again. Replicas send a heartbeat every third of an interval (``model_container.
  heartbeat``), so a healthy one is never silent for a whole interval, and a late one
  is only benched, not dropped. After ``DEAD_INTERVALS`` it is removed (forgotten: a
  message it sends later gets a REJECT, and it registers again).
* **Stuck**: it keeps heartbeating (its I/O thread is fine) but a batch it holds is still
  unanswered ``STUCK_INTERVALS`` after the deadline of every query in it. Those queries
  have had their default by then; it leaves rotation so that it gets no more work, the
  other batches it holds are retried elsewhere, and it comes back when it has answered.
* **Hung**: a batch has run past its model version's batch timeout (``ModelQueue.
  timeout_s``, counted from when the replica could start it: sent, or its previous
  answer). ``Dispatcher.batch_timed_out`` answers its queries and tells the replica to
  restart; it never comes back into rotation (its process exits and registers again).

``check`` applies these rules as of a moment when every message that had arrived was
already read (``RpcServer`` tells which), so that a frontend that was itself too busy to
read never blames its replicas for it.
"""

from __future__ import annotations

import math

from query_frontend.batching.dispatch import Dispatcher
from query_frontend.batching.replicas import Replica

# Silence, in heartbeat intervals, that takes a replica out of rotation ...
SILENT_INTERVALS = 1.0
# ... and that removes it.
DEAD_INTERVALS = 3.0
# How long past the last deadline of its queries a batch may go unanswered.
STUCK_INTERVALS = 1.0


class Liveness:
    def __init__(self, dispatcher: Dispatcher, interval_s: float) -> None:
        if interval_s <= 0:
            raise ValueError(f"heartbeat interval must be positive, got {interval_s}")
        self._dispatcher = dispatcher
        self.interval_s = interval_s

    def check(self, as_of: float) -> float:
        """Apply the rules as of ``as_of``; returns when a verdict may next change.

        Verdicts change only when time passes or a message arrives, and a message only
        ever postpones one, so waking at the returned time is enough.
        """
        silent_after = SILENT_INTERVALS * self.interval_s
        dead_after = DEAD_INTERVALS * self.interval_s
        next_check = math.inf
        for identity, replica in list(self._dispatcher.by_identity.items()):
            if self._dispatcher.by_identity.get(identity) is not replica:
                continue  # removed or replaced by an earlier verdict of this round
            silent = as_of - replica.last_seen
            if silent > dead_after:
                reason = f"silent for {silent:.3f} s"
                self._dispatcher.remove_replica(identity, reason, crashed=True)
                continue
            next_check = min(next_check, replica.last_seen + dead_after)
            if not replica.restarting:
                hung = timed_out_at(replica, self._dispatcher.queues[replica.key].timeout_s)
                if hung is not None and as_of > hung[1]:
                    self._dispatcher.batch_timed_out(identity, hung[0], as_of)
                    continue
                if hung is not None:
                    next_check = min(next_check, hung[1])
            if not replica.available:
                continue
            if silent > silent_after:
                self._dispatcher.suspend_replica(identity, f"silent for {silent:.3f} s", as_of)
                continue
            next_check = min(next_check, replica.last_seen + silent_after)
            due = stuck_at(replica, STUCK_INTERVALS * self.interval_s)
            if due is None:
                continue
            batch_id, when = due
            if as_of > when:
                late = as_of - when + STUCK_INTERVALS * self.interval_s
                reason = f"stuck: batch {batch_id} unanswered {late:.3f} s past its deadline"
                self._dispatcher.suspend_replica(identity, reason, as_of)
            else:
                next_check = min(next_check, when)
        return next_check


def timed_out_at(replica: Replica, timeout_s: float) -> tuple[int, float] | None:
    """The batch that will first run past ``timeout_s``, and when; None if it holds none."""
    oldest = replica.oldest_batch()
    if oldest is None:
        return None
    batch_id, started = oldest
    return batch_id, started + timeout_s


def stuck_at(replica: Replica, grace_s: float) -> tuple[int, float] | None:
    """The batch that will first count as stuck, and when; None if it holds none."""
    first: tuple[int, float] | None = None
    for batch_id, batch in replica.inflight.items():
        if not batch:
            continue
        when = max(query.deadline for query in batch) + grace_s
        if first is None or when < first[1]:
            first = (batch_id, when)
    return first
