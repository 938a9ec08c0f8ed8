"""Deleting what an app's selection policy learned under epochs it no longer uses.

Forgetting learned state is one write (a new ``policy_epoch`` in the app record, see
``state.policy``); the old keys are deleted afterwards, here, in the background. The
deletion is incremental (SCAN, then UNLINK in batches), so Redis never blocks on an app
with many users, and safe to run again after an interruption. Each batch is one Lua
script that reads the epochs the app uses as it unlinks (its ``policy_epoch``, stage 1's,
and the ``policy_epoch`` of each later stage in its ``stages`` field) and spares those
epochs' keys: an app reset again, or deleted and added again, or given a new pipeline,
while this runs keeps what it learns meanwhile. An app whose ``stages`` cannot be read
is left alone: deleting nothing is the safe side.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from management_frontend.state.keys import Keys
from management_frontend.state.records import text

BATCH = 500

# Unlink learned-state keys unless they belong to an epoch one of the app's stages uses
# at this moment (none, if the app is gone).
# KEYS: app record, then the state keys; ARGV: the epoch of each state key, in order
_UNLINK_STALE_LUA = """
local used = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  used[redis.call('HGET', KEYS[1], 'policy_epoch') or ''] = true
  local raw = redis.call('HGET', KEYS[1], 'stages')
  if raw and raw ~= '' then
    local ok, stages = pcall(cjson.decode, raw)
    if not ok or type(stages) ~= 'table' then return 0 end
    for _, stage in ipairs(stages) do
      if type(stage) ~= 'table' then return 0 end
      local epoch = stage['policy_epoch']
      if type(epoch) == 'string' then used[epoch] = true end
    end
  end
end
local stale = {}
for i = 2, #KEYS do
  if not used[ARGV[i - 1]] then stale[#stale + 1] = KEYS[i] end
end
if #stale == 0 then return 0 end
return redis.call('UNLINK', unpack(stale))
"""


class StaleStateCleaner:
    """Deletes old epochs' learned state of one app at a time (``delete``)."""

    def __init__(self, r: aioredis.Redis, keys: Keys) -> None:
        self._r = r
        self._keys = keys
        # EVALSHA, loading the script again only if Redis lost it (a restart).
        self._unlink = r.register_script(_UNLINK_STALE_LUA)

    async def delete(self, app: str) -> int:
        """Delete what ``app`` learned under any epoch but those its stages have as the
        keys go (every epoch, if the app is gone); returns the keys deleted."""
        deleted = 0
        batch: list[str] = []
        async for key in self._r.scan_iter(match=self._keys.policy_pattern(app), count=1000):
            batch.append(text(key))
            if len(batch) >= BATCH:
                deleted += await self._unlink_stale(app, batch)
                batch = []
        if batch:
            deleted += await self._unlink_stale(app, batch)
        return deleted

    async def _unlink_stale(self, app: str, batch: list[str]) -> int:
        epochs = [self._keys.policy_epoch_of(app, key) for key in batch]
        return int(await self._unlink(keys=[self._keys.app(app), *batch], args=epochs))
