"""Publishes the replicas connected to this frontend into Redis for the control plane.

Registrations happen on the RPC path, which must never wait for Redis, so changes go
through a queue that one background task writes out in order.

Each record is keyed ``{replica id}@{frontend id}``: a replica that serves several query
frontends (on Kubernetes, every frontend pod) is connected once to each, and one
frontend dropping it must not erase what the others recorded.
"""

from __future__ import annotations

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from management_frontend.state.keys import Keys
from management_frontend.state.records import read_replica_record, replica_field
from query_frontend.batching.replicas import Replica
from query_frontend.cancellation import stop_if_cancelled

logger = logging.getLogger(__name__)


class ReplicaRegistry:
    def __init__(self, r: aioredis.Redis, keys: Keys, frontend: str) -> None:
        self._r = r
        self._keys = keys
        self._frontend = frontend
        self._ops: asyncio.Queue[tuple[str, str | None]] = asyncio.Queue()

    def added(self, replica: Replica) -> None:
        record = replica.record(self._frontend)
        self._ops.put_nowait((record.field, record.to_json()))

    def removed(self, replica: Replica) -> None:
        self._ops.put_nowait((replica_field(replica.replica_id, self._frontend), None))

    async def clear_own(self) -> None:
        """Drop entries a previous run of this frontend left behind."""
        entries = await self._r.hgetall(self._keys.replicas)
        stale = [
            k
            for k, v in entries.items()
            if (read_replica_record(v) or {}).get("frontend") == self._frontend
        ]
        if stale:
            await self._r.hdel(self._keys.replicas, *stale)

    async def run(self) -> None:
        """Write queued changes until cancelled."""
        while True:
            field, value = await self._ops.get()
            while True:
                try:
                    if value is None:
                        await self._r.hdel(self._keys.replicas, field)
                    else:
                        await self._r.hset(self._keys.replicas, field, value)
                    stop_if_cancelled()
                    break
                except (RedisError, OSError) as exc:
                    stop_if_cancelled(exc)
                    logger.warning("cannot record replica %s in Redis: %s", field, exc)
                    await asyncio.sleep(0.5)
