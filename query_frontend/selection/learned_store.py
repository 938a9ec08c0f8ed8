"""What selection policies learned, in Redis: reading a record, recording feedback.

Query frontends are the only writers of the learned state (``{p}:app:{app}:policy:
{epoch}`` and a user's part under it: ``docs/redis-schema.md``). One feedback message is
one Lua script, all or nothing, and only into the epoch it was learned in; the
increments commute, so any number of query frontends learn into the same record without
a lock. The script is sent once and then run by its digest (``register_script``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import redis.asyncio as aioredis

from management_frontend.state.keys import Keys
from management_frontend.state.policy import (
    FEEDBACK_ID_TTL_S,
    USER_STATE_TTL_S,
    ArmFeedback,
    PolicyState,
)
from management_frontend.state.records import text_hash

# One feedback message, all or nothing, and only into the epoch it was learned in: the
# app's own (its first stage's) or one of its later stages' (the JSON field "stages").
# KEYS: app record, app state, user part ("" for none), seen-id key ("" for none)
# ARGV: epoch, uid flag ("1"/"0"), id TTL, user TTL, then per arm: name, start, dw, loss
_RECORD_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'policy_epoch') or '') ~= ARGV[1] then
  local live = false
  local stages = redis.call('HGET', KEYS[1], 'stages')
  if stages then
    local ok, list = pcall(cjson.decode, stages)
    if ok and type(list) == 'table' then
      for _, stage in ipairs(list) do
        if type(stage) == 'table' and stage['policy_epoch'] == ARGV[1] then live = true end
      end
    end
  end
  if not live then return 0 end
end
if KEYS[4] ~= '' then
  if not redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[3]) then return 2 end
end
local user = ARGV[2] == '1'
redis.call('HINCRBY', KEYS[2], 'updates', 1)
if user then redis.call('HINCRBY', KEYS[3], 'updates', 1) end
for i = 5, #ARGV, 4 do
  local w, n, l = 'w:' .. ARGV[i], 'n:' .. ARGV[i], 'l:' .. ARGV[i]
  redis.call('HSETNX', KEYS[2], w, ARGV[i + 1])
  if tonumber(ARGV[i + 2]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[2], w, ARGV[i + 2]) end
  redis.call('HINCRBY', KEYS[2], n, 1)
  redis.call('HINCRBYFLOAT', KEYS[2], l, ARGV[i + 3])
  if user then
    if tonumber(ARGV[i + 2]) ~= 0 then redis.call('HINCRBYFLOAT', KEYS[3], w, ARGV[i + 2]) end
    redis.call('HINCRBY', KEYS[3], n, 1)
    redis.call('HINCRBYFLOAT', KEYS[3], l, ARGV[i + 3])
  end
end
if user then redis.call('EXPIRE', KEYS[3], ARGV[4]) end
return 1
"""


class LearnedStateStore:
    """Reads and writes the learned state of apps' selection policies."""

    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self._r = r
        self._keys = keys
        self._record = r.register_script(_RECORD_LUA)

    async def read(self, app: str, epoch: str, uid: str | None = None) -> PolicyState:
        """One record as stored: the app's state, or with ``uid`` that user's part."""
        h = await self._r.hgetall(self._keys.policy_state(app, epoch, uid))
        return PolicyState.from_hash(text_hash(h))

    async def read_apps(self, apps: Sequence[tuple[str, str]]) -> list[PolicyState]:
        """The records of these (app, epoch) pairs, in one round trip."""
        async with self._r.pipeline(transaction=False) as pipe:
            for app, epoch in apps:
                pipe.hgetall(self._keys.policy_state(app, epoch))
            return [PolicyState.from_hash(text_hash(h)) for h in await pipe.execute()]

    async def record(
        self,
        app: str,
        epoch: str,
        uid: str | None,
        feedback: Mapping[str, ArmFeedback],
        feedback_id: str | None = None,
    ) -> int:
        """Add one feedback message to the app's state and, with ``uid``, to the user's
        part: ``RECORDED``; nothing if neither the app's ``policy_epoch`` nor that of one
        of its later stages is ``epoch`` any more
        (``STALE``: a reset or a policy change raced with it), or if ``feedback_id`` was
        counted in the last day (``DUPLICATE``)."""
        for arm, fb in feedback.items():
            for value in (fb.start, fb.log_weight, fb.loss):
                if not math.isfinite(value):
                    raise ValueError(f"feedback for {arm!r} is not finite: {fb}")
        keys = self._keys
        script_keys = [
            keys.app(app),
            keys.policy_state(app, epoch),
            keys.policy_state(app, epoch, uid) if uid is not None else "",
            keys.feedback_seen(app, epoch, feedback_id) if feedback_id is not None else "",
        ]
        args: list[str | int | float] = [
            epoch,
            "1" if uid is not None else "0",
            FEEDBACK_ID_TTL_S,
            USER_STATE_TTL_S,
        ]
        for arm, fb in feedback.items():
            args += [arm, repr(fb.start), repr(fb.log_weight), repr(fb.loss)]
        return int(await self._record(keys=script_keys, args=args))
