"""Messages of several frames on a byte stream: the RPC over a unix socket.

ZeroMQ keeps a message's frames together; a ``SOCK_STREAM`` socket does not, so the
direct unix-socket transport (``docs/wire-protocol.md`` §1.3) frames each RPC message
itself. A message is a little-endian ``u32`` frame count ``n`` (1 to ``MAX_FRAMES``),
``n`` ``u32`` frame lengths, then the ``n`` frames' bytes, back to back: the same frames
(header, lengths, data) that follow the identity on the ZeroMQ transport, so
``protocol.encode``/``protocol.decode`` are used unchanged.

``MessageReader`` is fed whatever a read returned (any cut: half a prefix, several
messages at once) and hands back the messages completed so far. A prefix announcing
more than ``MAX_FRAMES`` frames or more than ``max_message`` bytes raises
``FramingError`` before any of the body is buffered: a peer cannot make the reader hold
more than one message's limit. The connection is then closed by its owner.

``peer_uid`` is how each end learns who is at the other (``SO_PEERCRED``): both sides
admit only their own uid.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Final

from model_container.protocol import Frame

U32: Final = struct.Struct("<I")
MAX_FRAMES: Final = 16
DEFAULT_MAX_MESSAGE: Final = 256 * 1024 * 1024
_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


class FramingError(ValueError):
    """The stream does not hold a well-formed message (or one over the limit)."""


def encode_message(frames: Sequence[Frame]) -> list[bytes | memoryview]:
    """The pieces to write for one message, in order (``writelines``/``sendmsg``)."""
    views = list(frames)
    n = len(views)
    if not 1 <= n <= MAX_FRAMES:
        raise FramingError(f"a message has 1 to {MAX_FRAMES} frames, not {n}")
    prefix = struct.pack(f"<{n + 1}I", n, *(_nbytes(v) for v in views))
    return [prefix, *views]


def _nbytes(view: bytes | memoryview) -> int:
    return view.nbytes if isinstance(view, memoryview) else len(view)


class MessageReader:
    """Reassembles messages from the pieces a stream is read in."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE) -> None:
        self._max = max_message
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a complete message."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[list[bytes]]:
        """Add ``data``; return every message it completed (each a list of frames)."""
        buf = self._buf
        buf += data
        messages: list[list[bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= U32.size:
            (n,) = U32.unpack_from(buf, pos)
            if not 1 <= n <= MAX_FRAMES:
                raise FramingError(f"a message announces {n} frames (1 to {MAX_FRAMES})")
            head = U32.size * (n + 1)
            if end - pos < head:
                break
            lengths = struct.unpack_from(f"<{n}I", buf, pos + U32.size)
            total = sum(lengths)
            if total > self._max:
                raise FramingError(f"a message of {total} bytes (the limit is {self._max})")
            if end - pos - head < total:
                break
            start = pos + head
            frames = []
            for length in lengths:
                frames.append(bytes(buf[start : start + length]))
                start += length
            messages.append(frames)
            pos = start
        if pos:
            del buf[:pos]
        return messages


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return int(uid)
