"""Schooner's management frontend: the REST admin API over Redis, and the state contract.

Run it with ``python -m management_frontend``; embed it with ``create_app(Config(...))``.
The package, lowest layer first::

    state/        the contract every part of Schooner obeys: Redis keys, records, the
                  change feed's entries, the rules values obey, the policy arithmetic
                  (pure: imported by both frontends and the admin client)
    errors.py     the errors this frontend raises, each with its HTTP status
    config.py     Config, built once in the entry point and passed in
    storage/      Redis access: every write one transaction with its feed entry
                  (store.py), reads (reads.py), selection policies (policies.py), the
                  background deletion of forgotten learned state (cleanup.py)
    telemetry/    the query frontends' ticks ({p}:telemetry) merged into the live
                  series of /admin/overview and /admin/apps/{app}/activity
    ui/           the /ui web dashboard: login, session cookie, pages (its HTML, CSS
                  and JS in static/ui/)
    api/          the HTTP side: routes, request bodies, errors as answers
    app.py        the composition root: create_app and the lifespan that owns Redis
    cli.py        ``python -m management_frontend``

Dependencies point one way, down this list: ``storage`` imports ``state`` and
``errors``; ``telemetry`` imports ``state`` and ``storage``; ``ui`` imports none of
them; ``api`` imports all of those (its auth middleware takes the dashboard's session);
``app`` and ``cli`` anything. Of the rest of Schooner it imports only
``model_container`` (protocol, logging). This
``__init__`` and ``state`` import no web framework and no Redis client, so the query
frontend and the admin client can import the contract alone; the names that need
FastAPI or redis load on first use. ``tests/unit/test_architecture.py`` keeps all this.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from management_frontend.config import Config
from management_frontend.errors import Conflict, Invalid, ManagementError, NotFound, StartupError

if TYPE_CHECKING:
    from management_frontend.app import create_app
    from management_frontend.cli import main
    from management_frontend.storage.store import Store

__all__ = [
    "Config",
    "Conflict",
    "Invalid",
    "ManagementError",
    "NotFound",
    "StartupError",
    "Store",
    "create_app",
    "main",
]

_LAZY = {
    "create_app": "management_frontend.app",
    "main": "management_frontend.cli",
    "Store": "management_frontend.storage.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'management_frontend' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
