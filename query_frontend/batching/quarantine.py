"""Poison inputs: which inputs hang or crash replicas, and which are refused for a while.

An *incident* is a batch that hung (it ran past its model's batch timeout) or whose
replica crashed or disconnected while holding it. Every input of such a batch becomes a
*suspect*: the dispatcher sends suspects in batches of one, so that an innocent input
that only shared a batch with the culprit is cleared by its next success, and the
culprit is caught alone. An input with ``QUARANTINE_AFTER`` incidents, the last of them
in a batch of one, is *quarantined* for ``quarantine_s``: a query with it is refused at
once (HTTP 422) without reaching a replica.

Inputs are known by their digest, the prediction cache's (``caching.cache.cache_key``:
model version and input), so a quarantine is per model version. Memory is bounded: at
most ``max_tracked`` digests are remembered, the least recently touched forgotten
first. Pure: no clock (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from query_frontend.queries import ModelKey

# Incidents that quarantine an input (the last of them with the input alone in its batch).
QUARANTINE_AFTER = 2
DEFAULT_QUARANTINE_S = 600.0
DEFAULT_MAX_TRACKED = 10_000


class QuarantinedError(Exception):
    """The input hung or crashed replicas of this model version: it is refused for now."""


@dataclass(slots=True)
class _Record:
    model: ModelKey
    digest: bytes  # the cache key (model prefix + digest of the input)
    incidents: int = 0
    reason: str = ""  # the last incident, for people
    until: float = 0.0  # quarantined until then (loop.time()); 0: not quarantined
    until_wall: float = 0.0  # the same moment as a Unix time, for people


class Quarantine:
    """Incidents per input digest, and the inputs quarantined because of them."""

    def __init__(
        self, quarantine_s: float = DEFAULT_QUARANTINE_S, max_tracked: int = DEFAULT_MAX_TRACKED
    ) -> None:
        if quarantine_s < 0 or max_tracked < 1:
            raise ValueError("quarantine_s must be >= 0 and max_tracked >= 1")
        self.quarantine_s = quarantine_s
        self.max_tracked = max_tracked
        self._records: OrderedDict[bytes, _Record] = OrderedDict()
        self._models: dict[ModelKey, int] = {}  # tracked digests per model version

    def watches(self, model: ModelKey) -> bool:
        """Whether any input of ``model`` is a suspect or quarantined: if not, a query need
        not have its digest computed."""
        return self._models.get(model, 0) > 0

    def check(self, model: ModelKey, digest: bytes, now: float) -> tuple[bool, bool]:
        """(quarantined, suspect) for an input of ``model`` at ``now``."""
        record = self._records.get(digest)
        if record is None:
            return False, False
        if record.until:
            if now < record.until:
                return True, True
            record.until = record.until_wall = 0.0  # served its time: on probation
            record.incidents = QUARANTINE_AFTER - 1
        return False, True

    def refusal(self, model: ModelKey, digest: bytes) -> str:
        record = self._records[digest]
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.until_wall))
        return (
            f"input quarantined: it hung or crashed replicas of model '{model[0]}' version "
            f"'{model[1]}' {record.incidents} times (last: {record.reason}); it is refused "
            f"until {until} without reaching the model"
        )

    def incident(
        self, model: ModelKey, digest: bytes, alone: bool, reason: str, now: float
    ) -> bool:
        """Record that a batch holding the input hung or crashed its replica; True if the
        input is now quarantined."""
        record = self._records.get(digest)
        if record is None:
            record = self._records[digest] = _Record(model, digest)
            self._models[model] = self._models.get(model, 0) + 1
            self._evict()
        else:
            self._records.move_to_end(digest)
        record.incidents += 1
        record.reason = reason
        if record.incidents >= QUARANTINE_AFTER and alone and not record.until:
            record.until = now + self.quarantine_s
            record.until_wall = time.time() + self.quarantine_s
            return True
        return False

    def cleared(self, digest: bytes) -> None:
        """The input was answered: it was innocent (or the model was fixed)."""
        record = self._records.get(digest)
        if record is not None and not record.until:
            self._forget(digest)

    def forget_model(self, model: ModelKey) -> None:
        for digest in [d for d, r in self._records.items() if r.model == model]:
            self._forget(digest)

    def _forget(self, digest: bytes) -> None:
        record = self._records.pop(digest)
        left = self._models[record.model] - 1
        if left:
            self._models[record.model] = left
        else:
            del self._models[record.model]

    def _evict(self) -> None:
        while len(self._records) > self.max_tracked:
            self._forget(next(iter(self._records)))

    def quarantined(self, now: float) -> list[dict[str, object]]:
        """The inputs quarantined now, for ``/status``."""
        return [
            {
                "digest": r.digest[-16:].hex()[:12],
                "model": r.model[0],
                "version": r.model[1],
                "incidents": r.incidents,
                "reason": r.reason,
                "until": round(r.until_wall, 3),
            }
            for r in self._records.values()
            if r.until and now < r.until
        ]

    def count(self, now: float) -> int:
        return sum(1 for r in self._records.values() if r.until and now < r.until)

    @property
    def tracked(self) -> int:
        return len(self._records)
