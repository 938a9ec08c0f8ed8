"""The direct unix-socket transport: replicas on this host without ZeroMQ in between.

``docs/wire-protocol.md`` §1.3. The frontend listens on a ``SOCK_STREAM`` unix socket
(``--rpc-unix PATH``) beside its ZeroMQ ROUTER; each replica that connects is served by
an ``asyncio.Protocol`` on uvloop's own unix server, so its bytes are read on the event
loop's callback and a send is one ``writelines`` (libzmq's I/O threads, and their hops,
are not on this path). Messages are framed by ``model_container.framing``; each
complete one is handed, in the callback that read it, to ``on_message(identity,
frames)`` — the same handling as a ZeroMQ message.

A connection's identity is ``UNIX_IDENTITY_PREFIX`` + an 8-byte big-endian counter
(13 bytes; ZeroMQ's are 5 bytes, and a ZeroMQ peer may not choose one starting with a
zero byte), so one dispatcher keys replicas of both transports.

Authentication is the kernel's: the socket file is in a directory only this user may
enter (mode 0700, owned by us: ``check_socket_dir``, also run by the entry point at
start) and has mode 0600, and on accept the peer's ``SO_PEERCRED`` uid must be ours;
any other peer is closed at once, logged with the CURVE refusals (``RefusalLog``), and
counted by reason in ``UnixListener.refused`` (the frontend's
``schooner_rpc_refused_peers_total{transport="unix"}``). There is no CURVE on this
transport: the bytes never leave the kernel.

A stream that is not well framed (a frame count of 0, a message over the limit)
closes that connection only; a closed connection is reported to ``on_closed`` at once,
and a send to an identity without a connection returns False (the caller treats it as
an unreachable peer). Writes never wait: when the peer does not read, the transport
buffers (``pause_writing`` is only noted); a replica that stops reading stops answering,
and the liveness rules (silent, stuck past its batch's deadline) deal with it as with
any replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable, Sequence
from typing import Final, cast

from model_container.discovery import IPC_PATH_MAX
from model_container.framing import (
    DEFAULT_MAX_MESSAGE,
    FramingError,
    MessageReader,
    encode_message,
    peer_uid,
)
from model_container.protocol import Frame
from query_frontend.rpc.auth import RefusalLog

logger = logging.getLogger(__name__)

UNIX_IDENTITY_PREFIX: Final = b"\x00unix"
BACKLOG: Final = 128
# Why a peer was refused (the ``reason`` label of the frontend's metric; a fixed set).
OTHER_UID: Final = "other_uid"  # SO_PEERCRED names a uid that is not ours
UNKNOWN_PEER: Final = "unknown_peer"  # SO_PEERCRED could not be read

OnMessage = Callable[[bytes, list[bytes]], None]
OnClosed = Callable[[bytes], None]


class UnixSocketError(Exception):
    """The unix socket cannot be listened on; the message says what to fix."""


def is_unix_identity(identity: bytes) -> bool:
    return identity[:5] == UNIX_IDENTITY_PREFIX


def check_socket_dir(path: str) -> None:
    """Refuse a path whose directory others could reach: it must exist, be ours, and
    have mode 0700; ``path`` itself, if it exists, must be a socket (a stale one)."""
    if len(os.fsencode(path)) > IPC_PATH_MAX:
        raise UnixSocketError(
            f"{path!r} is longer than a unix socket path may be ({IPC_PATH_MAX} bytes): "
            "choose a shorter path"
        )
    directory = os.path.dirname(os.path.abspath(path))
    try:
        st = os.stat(directory)
    except FileNotFoundError:
        raise UnixSocketError(
            f"the directory {directory} does not exist: create it with `mkdir -m 700 {directory}`"
        ) from None
    if not stat.S_ISDIR(st.st_mode):
        raise UnixSocketError(f"{directory} is not a directory")
    uid = os.getuid()
    if st.st_uid != uid:
        raise UnixSocketError(
            f"the directory {directory} belongs to uid {st.st_uid}, not to this user "
            f"(uid {uid}): put the socket in a directory of this user's, made with "
            "`mkdir -m 700 DIR`"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        raise UnixSocketError(
            f"the directory {directory} has mode {mode:04o}: it must be 0700, so that "
            f"only this user can reach the socket: `chmod 700 {directory}`"
        )
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise UnixSocketError(
            f"{path} exists and is not a socket: remove it, or choose another path"
        )


def check_socket_path(path: str) -> None:
    """``check_socket_dir``, and no other process listens on ``path`` already."""
    check_socket_dir(path)
    if os.path.lexists(path) and _someone_listens(path):
        raise UnixSocketError(f"another process listens on {path}: stop it, or choose another path")


def bind_unix_socket(path: str) -> socket.socket:
    """A listening, non-blocking socket at ``path`` (mode 0600), after
    ``check_socket_path``; a stale socket file (nobody listens) is replaced."""
    check_socket_path(path)
    if os.path.lexists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        # The directory is 0700 already: the mode is a second fence, set before listen().
        os.chmod(path, 0o600)
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise UnixSocketError(f"cannot listen on {path}: {exc}") from exc
    return sock


def _someone_listens(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
            return False
        raise UnixSocketError(f"cannot tell whether {path} is in use: {exc}") from exc
    finally:
        probe.close()
    return True


class UnixListener:
    """Accept replicas on a unix socket; serve each connection on the event loop."""

    def __init__(
        self,
        path: str,
        on_message: OnMessage,
        on_closed: OnClosed,
        refusals: RefusalLog,
        *,
        allowed_uid: int | None = None,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        """``allowed_uid``: the peers admitted (default: our own uid)."""
        self.path = path
        self._on_message = on_message
        self._on_closed = on_closed
        self._refusals = refusals
        self._uid = os.getuid() if allowed_uid is None else allowed_uid
        self._max_message = max_message
        self._sock: socket.socket | None = None
        self._file_id: tuple[int, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._ids = itertools.count(1)
        self.connections: dict[bytes, _Connection] = {}
        self.closed = False
        # Peers refused since start, by reason; read when Prometheus scrapes.
        self.refused: dict[str, int] = dict.fromkeys((OTHER_UID, UNKNOWN_PEER), 0)

    def bind(self) -> None:
        """Create the socket file and listen (connections wait until ``start``)."""
        self._sock = bind_unix_socket(self.path)
        st = os.stat(self.path)
        self._file_id = (st.st_dev, st.st_ino)

    async def start(self) -> None:
        """Accept and serve connections; call after ``bind``, from the running loop."""
        if self._sock is None or self._server is not None or self.closed:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Connection(self), sock=self._sock)

    def send(self, identity: bytes, frames: Sequence[Frame]) -> bool:
        """Write one message; False if ``identity`` has no open connection."""
        conn = self.connections.get(identity)
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return False
        conn.transport.writelines(encode_message(frames))
        return True

    def close(self) -> None:
        """Stop accepting, close every connection, and remove the socket file (if it is
        still the one bound here)."""
        if self.closed:
            return
        self.closed = True
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        self.connections.clear()
        if self._file_id is not None:
            with contextlib.suppress(OSError):
                st = os.lstat(self.path)
                if (st.st_dev, st.st_ino) == self._file_id:
                    os.unlink(self.path)
            self._file_id = None

    # ----------------------------------------------------------- for _Connection only

    def _admit(self, conn: _Connection, transport: asyncio.Transport) -> bytes | None:
        sock = transport.get_extra_info("socket")
        try:
            uid = peer_uid(sock)
        except (OSError, struct.error) as exc:
            logger.warning("closing a unix RPC connection whose peer is unknown: %s", exc)
            self._refuse(UNKNOWN_PEER, "a unix connection whose peer is unknown")
            return None
        if uid != self._uid:
            self._refuse(OTHER_UID, f"a unix connection from uid {uid}, not {self._uid}")
            return None
        if self.closed:
            return None
        identity = UNIX_IDENTITY_PREFIX + next(self._ids).to_bytes(8, "big")
        self.connections[identity] = conn
        return identity

    def _refuse(self, reason: str, why: str) -> None:
        self.refused[reason] += 1
        self._refusals.refused(why)

    def _lost(self, identity: bytes) -> None:
        if self.connections.pop(identity, None) is not None and not self.closed:
            self._on_closed(identity)


class _Connection(asyncio.Protocol):
    """One replica's connection: framed messages in, writes out."""

    __slots__ = ("_listener", "_on_message", "_reader", "identity", "paused", "transport")

    def __init__(self, listener: UnixListener) -> None:
        self._listener = listener
        self._on_message = listener._on_message
        self._reader = MessageReader(listener._max_message)
        self.identity: bytes | None = None
        self.transport: asyncio.Transport | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not subclasses of asyncio's, but have its methods.)
        transport = cast(asyncio.Transport, transport)
        identity = self._listener._admit(self, transport)
        if identity is None:
            transport.abort()
            return
        self.transport = transport
        self.identity = identity

    def data_received(self, data: bytes) -> None:
        identity = self.identity
        if identity is None:
            return
        try:
            messages = self._reader.feed(data)
        except FramingError as exc:
            # (The error names counts and sizes, never the bytes.)
            logger.warning("closing a unix RPC connection: %s", exc)
            self.identity = None
            assert self.transport is not None
            self.transport.abort()
            self._listener._lost(identity)
            return
        on_message = self._on_message
        for frames in messages:
            on_message(identity, frames)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        identity, self.identity = self.identity, None
        if identity is not None:
            self._listener._lost(identity)

    def pause_writing(self) -> None:
        # The transport keeps buffering: nothing waits for the peer to read.
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
