"""Schooner's management frontend: the REST admin API over Redis, and the state contract.

Run it with ``python -m management_frontend``; embed it with ``create_app(Config(...))``.

    state/           the contract every part obeys: keys, records, rules, policy math
                     (pure; imported by both frontends and the admin client)
    api.py           routes of the admin API; models.py, http_errors.py: bodies, errors
    store.py         every write, one transaction with its change-feed entry
    reads.py         reads of records; policy_store.py, cleanup.py: selection policies
    config.py, cli.py, errors.py

This package imports ``model_container.protocol`` and nothing else of Schooner. Its
``__init__`` and ``state`` import no web framework and no Redis client, so the query
frontend and the admin client can import the contract alone; the names that need
FastAPI or redis load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from management_frontend.config import Config
from management_frontend.errors import Conflict, Invalid, ManagementError, NotFound, StartupError

if TYPE_CHECKING:
    from management_frontend.api import create_app
    from management_frontend.cli import main
    from management_frontend.store import Store

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
    "create_app": "management_frontend.api",
    "main": "management_frontend.cli",
    "Store": "management_frontend.store",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'management_frontend' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
