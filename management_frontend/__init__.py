"""Schooner's management frontend: the REST admin API, the Redis schema and change feed.

Run it with ``python -m management_frontend``; embed it with
``create_app(Config(...))``. The light modules (``schema``, ``validation``, ``errors``,
``config``) import without FastAPI or uvicorn, so query frontends and the admin client
can use them; the names that need FastAPI load on first use.
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
