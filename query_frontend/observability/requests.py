"""Request ids and the record of one predict/update request as it goes.

A request's id is the client's ``X-Request-Id`` when it is sane (1 to 128 characters of
``[A-Za-z0-9._:/+=-]``: safe in a log line, a header and a span attribute), else one
made here: a random prefix per process and a counter (``4f9c2ab1d07e-2a``), unique
across processes without a system call per request. A client's id that is not sane is
replaced, and the access log says so (``request_id_replaced``).

``queries.RequestTrace`` is what a handler hands down with its queries (``Evaluator.submit``):
their id for the replica's log, and back from the dispatcher the queries themselves,
whose timestamps (``Query.submitted``, ``sent``, ``held``, ``model_s``) make the
latency split of ``timing`` and the access log.
"""

from __future__ import annotations

import itertools
import os
import re

from query_frontend.queries import RequestTrace

__all__ = ["MAX_REQUEST_ID", "RequestIds"]

#: Longest client request id taken as it is.
MAX_REQUEST_ID = 128
_SANE = re.compile(rb"[A-Za-z0-9._:/+=\-]{1,%d}" % MAX_REQUEST_ID)
_HEADER = b"x-request-id"


class RequestIds:
    """Takes a client's ``X-Request-Id`` or makes one (see the module)."""

    __slots__ = ("_counter", "_prefix")

    def __init__(self, prefix: bytes | None = None) -> None:
        self._prefix = prefix if prefix is not None else os.urandom(6).hex().encode()
        self._counter = itertools.count(1)

    def new(self) -> bytes:
        return b"%b-%x" % (self._prefix, next(self._counter))

    def trace(self, headers: list[tuple[bytes, bytes]]) -> RequestTrace:
        """The ``RequestTrace`` of a request with these headers (names in lower case)."""
        for name, value in headers:
            if name == _HEADER:
                if _SANE.fullmatch(value):
                    return RequestTrace(value)
                return RequestTrace(self.new(), replaced=True)
        return RequestTrace(self.new())
