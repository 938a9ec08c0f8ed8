"""A replica's side of the direct unix-socket transport, on a plain blocking socket.

``UnixPeer`` is for tests that drive the frontend's unix listener message by message:
connect, send a protocol message (or raw bytes), receive the next message. Its calls
block (with a timeout): from a test running the frontend in its event loop, call them
through ``asyncio.to_thread``.

As a program, it is a replica that answers (``doubles`` in, ``10 x`` the first value of
each input out):

    python tests/unix_peer.py PATH MODEL VERSION REPLICA_ID

It sends HELLO, answers every PREDICT with a RESULT at once, sends a heartbeat three
times per interval of the WELCOME, registers again after a REJECT, and exits when the
frontend closes the connection. It speaks ``model_container.framing`` only: no ZeroMQ.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import time

if __name__ == "__main__":  # run as a file: the repository's packages
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from model_container import protocol
from model_container.framing import MessageReader, encode_message
from model_container.protocol import (
    Frame,
    Heartbeat,
    Hello,
    InputType,
    Message,
    Predict,
    Reject,
    Result,
    Welcome,
)

TIMEOUT_S = 15.0


class UnixPeer:
    """One connection to the frontend's unix socket."""

    def __init__(self, path: str, timeout: float = TIMEOUT_S) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self._reader = MessageReader()
        self._pending: collections.deque[list[bytes]] = collections.deque()

    def send(self, msg: Message) -> None:
        self.send_frames(protocol.encode(msg))

    def send_frames(self, frames: list[Frame]) -> None:
        self.sock.sendall(b"".join(bytes(piece) for piece in encode_message(frames)))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv_frames(self) -> list[bytes]:
        """The next message's frames; EOFError if the frontend closed the connection."""
        while not self._pending:
            try:
                data = self.sock.recv(256 * 1024)
            except ConnectionResetError:
                data = b""
            if not data:
                raise EOFError("the frontend closed the connection")
            self._pending.extend(self._reader.feed(data))
        return self._pending.popleft()

    def recv(self) -> Message:
        return protocol.decode(self.recv_frames())

    def recv_next(self) -> Message:
        """The next message that is not a heartbeat."""
        while True:
            msg = self.recv()
            if not isinstance(msg, Heartbeat):
                return msg

    def register(self, model: str, version: str, replica_id: str) -> Welcome:
        self.send(Hello(model, version, InputType.DOUBLES, replica_id, pid=os.getpid()))
        msg = self.recv_next()
        if not isinstance(msg, Welcome):
            raise AssertionError(f"expected WELCOME, got {msg!r}")
        return msg

    def closed_by_frontend(self) -> bool:
        """Read until the frontend closes the connection (True), skipping messages."""
        try:
            while True:
                self.recv_frames()
        except EOFError:
            return True

    def close(self) -> None:
        self.sock.close()


def answer(predict: Predict) -> Result:
    """10 x the first value of each input, as the tests' model computes it."""
    xs = protocol.unpack_inputs(InputType.DOUBLES, predict.lengths, predict.data)
    lengths, data = protocol.pack_outputs([float(x[0]) * 10 for x in xs])
    return Result(predict.batch_id, lengths, data)


def serve(path: str, model: str, version: str, replica_id: str) -> None:
    peer = UnixPeer(path)
    hello = Hello(model, version, InputType.DOUBLES, replica_id, pid=os.getpid())
    peer.send(hello)
    interval = 1.0
    last_beat = time.monotonic()
    while True:
        peer.sock.settimeout(interval / 3)
        try:
            msg = peer.recv()
        except TimeoutError:
            msg = None
        except EOFError:
            return
        if isinstance(msg, Welcome):
            interval = msg.heartbeat_ms / 1000
        elif isinstance(msg, Predict):
            peer.send(answer(msg))
        elif isinstance(msg, Reject):
            peer.send(hello)
        if time.monotonic() - last_beat >= interval / 3:
            peer.send(Heartbeat())
            last_beat = time.monotonic()


if __name__ == "__main__":
    serve(*sys.argv[1:5])
