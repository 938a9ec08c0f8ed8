"""One ``write`` per response: what uvicorn writes to a connection, gathered until the
end of the event loop's current step.

uvicorn writes a response in two calls, its status line and headers on
``http.response.start`` and its body on ``http.response.body``; with uvloop each is a
``send`` system call at once, and on loopback a send also runs the receiver's side of
the TCP stack. py-spy on the query frontend at c=64 showed those two writes taking a
third of its time on the cache-hit path. ``CoalescingTransport`` stands between the
protocol and its transport: writes made during one step of the event loop (a handler's
start and body, pipelined answers) are joined and sent with one ``write`` from a
callback the loop runs before it next polls, so nothing waits longer than the step that
wrote it. Order is kept: every write of the connection — the protocol's own (400, 408)
as well as the responses' — goes through the same buffer, and ``close`` sends what is
gathered first. A large body (``JOIN_LIMIT``) is not copied to be joined.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["JOIN_LIMIT", "CoalescedWrites", "CoalescingTransport", "coalesced_protocol"]

#: Bytes past which gathered writes are sent one by one rather than copied into one.
JOIN_LIMIT = 64 * 1024


class CoalescingTransport:
    """``transport``, its writes gathered and sent once per step of ``loop`` (see the
    module); everything else is ``transport``'s own."""

    __slots__ = ("_loop", "_pending", "_size", "transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._size = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        pending = self._pending
        if pending is None:
            self._pending = [bytes(data) if not isinstance(data, bytes) else data]
            self._size = len(data)
            self._loop.call_soon(self.flush)
        else:
            pending.append(bytes(data) if not isinstance(data, bytes) else data)
            self._size += len(data)

    def flush(self) -> None:
        """Send what is gathered (nothing if the connection is closing: its peer is gone,
        or ``close`` sent it already)."""
        pending = self._pending
        if pending is None:
            return
        self._pending = None
        transport = self.transport
        if transport.is_closing():
            return
        if len(pending) == 1:
            transport.write(pending[0])
        elif self._size <= JOIN_LIMIT:
            transport.write(b"".join(pending))
        else:
            transport.writelines(pending)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def abort(self) -> None:
        self._pending = None
        self.transport.abort()

    def is_closing(self) -> bool:
        return self.transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + self._size * (self._pending is not None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class CoalescedWrites:
    """Mixed into uvicorn's ``HttpToolsProtocol`` (see ``coalesced_protocol``): the
    protocol writes through a ``CoalescingTransport``."""

    loop: asyncio.AbstractEventLoop  # uvicorn's protocol provides it

    def connection_made(self, transport: asyncio.Transport) -> None:
        wrapped: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(wrapped)  # type: ignore[misc]


def coalesced_protocol(base: type[Any]) -> type[Any]:
    """The protocol class to give uvicorn (``http=``): ``base`` writing once per step."""
    return type(f"Coalesced{base.__name__}", (CoalescedWrites, base), {})
