"""When a replica, rather than the model, is to blame for a failed batch: the rules.

Three ways a batch fails that are the replica's fault, not its input's:

* it **timed out**: it ran past its model version's batch timeout (``batch_timeout``);
  the replica is told to restart (``protocol.Restart``);
* its replica **crashed or disconnected** while holding it;
* the replica answered an **ERROR of its own**: the model raised ``MemoryError`` (the
  process may be unusable), or the container itself failed on the batch (an ERROR
  other than ``model_raised`` that names an exception: ``is_replica_failure``).

Such a batch's queries are retried once on another replica while their deadline allows.
A model that raises on its input (``ValueError``) is the model's answer: a 500 naming
it, never retried, however many replicas there are.

**Outlier ejection.** A replica whose last ``EJECT_AFTER`` batches all failed for a
replica reason, while a sibling of the same version answered a batch since the first of
them (``should_eject``), is taken out of rotation and told to restart. Without a
succeeding sibling nothing is ejected: a model that fails everywhere is not a replica
problem, and ejecting every replica would only add an outage to it.

Pure: no clock (times are passed in), no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from model_container.protocol import Error, ErrorKind
from query_frontend.batching.replicas import Replica

# Floor of a derived batch timeout, and its multiple of the tightest objective.
DEFAULT_TIMEOUT_FLOOR_S = 1.0
TIMEOUT_SLO_FACTOR = 10.0
# Replica-reason failures in a row (with a sibling succeeding) that eject a replica.
EJECT_AFTER = 5


def batch_timeout(explicit_s: float, slo_s: float, floor_s: float) -> float:
    """A model version's batch timeout: as set (> 0), else ``TIMEOUT_SLO_FACTOR`` times
    the tightest objective of its apps, and never below ``floor_s``."""
    if explicit_s > 0:
        return explicit_s
    return max(floor_s, TIMEOUT_SLO_FACTOR * slo_s)


def is_replica_failure(msg: Error) -> bool:
    """Whether an ERROR is the replica's failure rather than the model's answer."""
    if msg.exc_type == "MemoryError":
        return True
    return msg.kind is ErrorKind.BAD_OUTPUT and bool(msg.exc_type)


def failed(replica: Replica, now: float) -> None:
    """Count a replica-reason failure of one of its batches."""
    if replica.failures == 0:
        replica.failing_since = now
    replica.failures += 1


def succeeded(replica: Replica, now: float) -> None:
    replica.failures = 0
    replica.last_success = now


def should_eject(replica: Replica, siblings: Iterable[Replica]) -> Replica | None:
    """The sibling whose success since ``replica`` started failing makes the replica an
    outlier, if it failed ``EJECT_AFTER`` times in a row; None: keep it."""
    if replica.failures < EJECT_AFTER:
        return None
    for sibling in siblings:
        if sibling is not replica and sibling.last_success > replica.failing_since:
            return sibling
    return None
