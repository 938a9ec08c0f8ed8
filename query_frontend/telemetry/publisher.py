"""The background task that appends this frontend's ticks to ``{p}:telemetry``.

Every ``tick_s`` it builds a tick (``ticks.TickBuilder``) and XADDs it as one field,
``tick`` (JSON), trimming the stream to about ``TELEMETRY_MAXLEN`` entries. Serving
never waits for it: when Redis is down or slow (each XADD has ``tick_s`` to finish),
the failure is logged once, the tick's counts stay in the next one, and the task tries
again a tick later, saying so when Redis answers again.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from management_frontend.state.keys import (
    TELEMETRY_FIELD,
    TELEMETRY_MAXLEN,
    TELEMETRY_TICK_S,
    Keys,
)
from query_frontend.cancellation import stop_if_cancelled
from query_frontend.telemetry.ticks import TickBuilder

logger = logging.getLogger(__name__)


class TelemetryPublisher:
    def __init__(
        self,
        r: aioredis.Redis,
        keys: Keys,
        builder: TickBuilder,
        tick_s: float = TELEMETRY_TICK_S,
        maxlen: int = TELEMETRY_MAXLEN,
    ) -> None:
        self._r = r
        self._key = keys.telemetry
        self.builder = builder
        self.tick_s = tick_s
        self.maxlen = maxlen
        self.failing = False  # the last XADD failed (and that was logged)

    async def run(self) -> None:
        """Publish a tick every ``tick_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.tick_s)
            await self.publish()

    async def publish(self) -> bool:
        """Build and append one tick; whether Redis took it."""
        tick = self.builder.build()
        try:
            await asyncio.wait_for(
                self._r.xadd(
                    self._key,
                    {TELEMETRY_FIELD: orjson.dumps(tick)},
                    maxlen=self.maxlen,
                    approximate=True,
                ),
                timeout=self.tick_s,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            stop_if_cancelled(exc)
            if not self.failing:
                logger.warning(
                    "cannot append telemetry to Redis (%s): retrying every %g s; "
                    "serving is not affected",
                    exc or type(exc).__name__,
                    self.tick_s,
                )
                self.failing = True
            return False
        stop_if_cancelled()
        self.builder.commit()
        if self.failing:
            logger.info("telemetry reaches Redis again")
            self.failing = False
        return True
