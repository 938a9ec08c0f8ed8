"""The query frontend's coalesced writes (``query_frontend.http.writes``), on real sockets:
what a step of the event loop writes leaves in one ``write``, in order, and ``close``
sends what was gathered before closing."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from query_frontend.http.writes import JOIN_LIMIT, CoalescingTransport


class _Counting:
    """A real transport, its ``write`` calls recorded."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        self.transport.write(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


async def _pair() -> tuple[_Counting, CoalescingTransport, socket.socket]:
    loop = asyncio.get_running_loop()
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
    counting = _Counting(transport)  # type: ignore[arg-type]
    return counting, CoalescingTransport(counting, loop), theirs  # type: ignore[arg-type]


async def _read_all(sock: socket.socket, n: int) -> bytes:
    loop = asyncio.get_running_loop()
    got = b""
    while len(got) < n:
        chunk = await loop.sock_recv(sock, n - len(got))
        if not chunk:
            break
        got += chunk
    return got


async def test_writes_of_one_step_leave_in_one_write_in_order() -> None:
    counting, coalescing, peer = await _pair()
    coalescing.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    coalescing.write(bytearray(b"{}"))
    coalescing.write(memoryview(b"HTTP/1.1 200 OK\r\n"))
    assert counting.writes == []  # gathered until the step ends
    await asyncio.sleep(0)
    assert counting.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\n"]
    coalescing.write(b"next")
    await asyncio.sleep(0)
    assert counting.writes[1:] == [b"next"]
    expected = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}HTTP/1.1 200 OK\r\nnext"
    assert await _read_all(peer, len(expected)) == expected
    coalescing.close()
    peer.close()


async def test_close_sends_what_was_gathered_first() -> None:
    counting, coalescing, peer = await _pair()
    coalescing.write(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    coalescing.close()
    assert coalescing.is_closing()
    assert await _read_all(peer, 1000) == b"HTTP/1.1 408 Request Timeout\r\n\r\n"
    await asyncio.sleep(0)  # the scheduled flush finds nothing left to send
    assert len(counting.writes) == 1
    peer.close()


async def test_a_large_body_is_not_joined() -> None:
    counting, coalescing, peer = await _pair()
    body = b"x" * (JOIN_LIMIT + 1)
    coalescing.write(b"headers\r\n\r\n")
    coalescing.write(body)
    await asyncio.sleep(0)
    assert counting.writes == [b"headers\r\n\r\n", body]
    assert await _read_all(peer, len(body) + 11) == b"headers\r\n\r\n" + body
    coalescing.close()
    peer.close()


async def test_a_connection_already_closing_drops_what_was_gathered() -> None:
    counting, coalescing, peer = await _pair()
    coalescing.write(b"late")
    counting.transport.close()
    await asyncio.sleep(0)
    assert counting.writes == []
    peer.close()
