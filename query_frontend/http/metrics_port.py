"""``GET /metrics`` alone, without authentication, on a port of its own (``--metrics-port``).

On the query port ``/metrics`` needs the admin token; a Prometheus that cannot send one
scrapes this port instead, which the operator keeps reachable only from the monitoring
network. It serves nothing else: every other path is a 404, every other method a 405.
A few lines of asyncio on the frontend's own loop, so that scrapes read the metrics where
they are written; a request's head must arrive within ``HEAD_TIMEOUT_S`` and fit in
``MAX_HEAD_BYTES``, or the connection is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from prometheus_client import CONTENT_TYPE_LATEST

logger = logging.getLogger(__name__)

HEAD_TIMEOUT_S: Final = 5.0
MAX_HEAD_BYTES: Final = 8192


def _response(status: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode("latin-1") + body


async def serve_metrics(host: str, port: int, render: Callable[[], bytes]) -> asyncio.Server:
    """Start serving ``render()`` at ``http://host:port/metrics``; close the returned server
    (``close()`` then ``await wait_closed()``) to stop."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
            method, _, rest = head.partition(b" ")
            target = rest.partition(b" ")[0].partition(b"?")[0]
            if target != b"/metrics":
                writer.write(
                    _response("404 Not Found", b"only /metrics is served here\n", "text/plain")
                )
            elif method not in (b"GET", b"HEAD"):
                writer.write(
                    _response(
                        "405 Method Not Allowed", b"use GET\n", "text/plain", "Allow: GET\r\n"
                    )
                )
            else:
                body = render()
                writer.write(
                    _response("200 OK", b"" if method == b"HEAD" else body, CONTENT_TYPE_LATEST)
                )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a slow, oversized or vanished client: just close
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, host, port, limit=MAX_HEAD_BYTES)
    logger.info("serving /metrics without authentication on %s:%d", host, port)
    return server
