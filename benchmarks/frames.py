"""Length-prefixed frames on a byte stream (an AF_UNIX ``SOCK_STREAM`` socket).

A frame is a 4-byte little-endian length, then that many bytes. ``FrameReader`` is fed
whatever a read returned (any cut: half a header, several frames at once) and hands back
the frames completed so far; a length over ``max_frame`` raises ``FrameTooLargeError`` before
any of its body is buffered, so a peer cannot make the reader hold more than one
frame's limit. Used by ``benchmarks.transport_rtt``; a direct unix-socket transport for
the RPC would need the same (plus the message framing of ``docs/wire-protocol.md``
inside each frame).
"""

from __future__ import annotations

import struct
from typing import Final

HEADER: Final = struct.Struct("<I")
DEFAULT_MAX_FRAME: Final = 64 * 1024 * 1024


class FrameTooLargeError(ValueError):
    """A frame's announced length is over the reader's limit."""


def frame(payload: bytes | bytearray | memoryview) -> bytes:
    """``payload`` with its length in front."""
    return HEADER.pack(len(payload)) + bytes(payload)


class FrameReader:
    """Reassembles frames from the pieces a stream is read in."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self._max = max_frame
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes received that are not yet part of a complete frame."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """Add ``data``; return every frame it completed, in order."""
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        end = len(buf)
        size = HEADER.size
        while end - pos >= size:
            (length,) = HEADER.unpack_from(buf, pos)
            if length > self._max:
                raise FrameTooLargeError(f"a frame of {length} bytes (the limit is {self._max})")
            if end - pos - size < length:
                break
            start = pos + size
            frames.append(bytes(buf[start : start + length]))
            pos = start + length
        if pos:
            del buf[:pos]
        return frames
