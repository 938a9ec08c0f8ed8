"""The request ids of the batch the model is running, for the model's own log lines.

A frontend sends one request id per input with each PREDICT (``"rid"``, the client's
``X-Request-Id`` or one it made). While the model runs on the batch they are
``current_request_ids()``, and every log record made meanwhile on that thread carries
``record.request_id`` (the batch's ids joined with ``,``; ``"-"`` outside a batch), which
the replica's log format shows: a model that logs with ``logging`` needs nothing more
for its lines to name the requests they served.

A context variable, so the stand-in's thread (heartbeats while a batch runs long) and
threads the model starts itself see no ids; a record factory (``install``), so a
handler or formatter the model configures itself can use ``%(request_id)s`` too.
"""

from __future__ import annotations

import contextvars
import logging
from typing import Any

__all__ = ["RequestIdFilter", "current_request_ids", "install", "request_ids"]

_IDS: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "schooner_request_ids", default=()
)
#: For ``run_batch``: set the ids of the batch about to run (``reset`` the token after).
request_ids = _IDS


def current_request_ids() -> tuple[str, ...]:
    """The request ids of the batch the model is running on this thread, one per input
    (``()`` outside a batch, or when the frontend sent none)."""
    return _IDS.get()


def _tag() -> str:
    ids = _IDS.get()
    return ",".join(ids) if ids else "-"


def install() -> None:
    """Make every log record carry ``request_id`` (idempotent; entry points call it)."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "schooner_request_ids", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = _tag()
        return record

    factory.schooner_request_ids = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class RequestIdFilter(logging.Filter):
    """For a handler whose format shows ``%(request_id)s``: a record made without the
    factory (``logging.makeLogRecord``) gets one too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = _tag()
        return True
