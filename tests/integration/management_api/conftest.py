"""The ``api`` fixture: the management frontend served on a free port over the test's
emptied Redis (``redis_url``), and an httpx client for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest_asyncio

from management_frontend import Config

from .helpers import serve


@pytest_asyncio.fixture
async def api(redis_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(Config(redis_url=redis_url, redis_wait_s=5)) as client:
        yield client
