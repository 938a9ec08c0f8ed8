"""The unix listener's checks at start and its peer check, on real sockets and files.

``check_socket_dir`` and ``bind_unix_socket`` refuse a directory others could reach and
replace only a stale socket; ``UnixListener`` closes a peer of another uid (the uid it
admits is injected here: a process of another uid needs root, and
``tests/integration/test_unix_transport.py`` makes one when it is root); the entry point
refuses ``--rpc-unix`` with exit status 2 and says what to fix.
"""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from unix_peer import UnixPeer

from model_container.discovery import IPC_PATH_MAX
from query_frontend.rpc.auth import RefusalLog
from query_frontend.rpc.unix_listener import (
    UNIX_IDENTITY_PREFIX,
    UnixListener,
    UnixSocketError,
    bind_unix_socket,
    check_socket_dir,
    is_unix_identity,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def private_dir(tmp_path: Path) -> Path:
    d = tmp_path / "rpc"
    d.mkdir(mode=0o700)
    return d


def test_a_private_directory_of_ours_is_accepted(private_dir: Path) -> None:
    check_socket_dir(str(private_dir / "q.sock"))


def test_a_missing_directory_is_refused_with_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(UnixSocketError, match="does not exist: create it with `mkdir -m 700"):
        check_socket_dir(str(tmp_path / "nope" / "q.sock"))


@pytest.mark.parametrize("mode", [0o755, 0o750, 0o701, 0o600])
def test_a_directory_others_could_enter_is_refused(private_dir: Path, mode: int) -> None:
    private_dir.chmod(mode)
    with pytest.raises(UnixSocketError, match=f"mode {mode:04o}.*chmod 700"):
        check_socket_dir(str(private_dir / "q.sock"))


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a directory away")
def test_a_directory_of_another_user_is_refused(private_dir: Path) -> None:
    os.chown(private_dir, 65534, 65534)
    with pytest.raises(UnixSocketError, match="belongs to uid 65534"):
        check_socket_dir(str(private_dir / "q.sock"))


def test_a_file_that_is_not_a_socket_is_left_alone(private_dir: Path) -> None:
    path = private_dir / "q.sock"
    path.write_text("keep me")
    with pytest.raises(UnixSocketError, match="is not a socket"):
        bind_unix_socket(str(path))
    assert path.read_text() == "keep me"


def test_a_path_too_long_for_a_unix_socket_is_refused(private_dir: Path) -> None:
    path = str(private_dir / ("x" * IPC_PATH_MAX))
    with pytest.raises(UnixSocketError, match="longer than a unix socket path"):
        check_socket_dir(path)


def test_a_stale_socket_file_is_replaced_and_the_new_one_is_0600(private_dir: Path) -> None:
    path = str(private_dir / "q.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    sock = bind_unix_socket(path)
    try:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        UnixPeer(path).close()  # it listens
    finally:
        sock.close()


def test_a_socket_someone_listens_on_is_not_taken_over(private_dir: Path) -> None:
    path = str(private_dir / "q.sock")
    live = bind_unix_socket(path)
    try:
        with pytest.raises(UnixSocketError, match="another process listens"):
            bind_unix_socket(path)
        UnixPeer(path).close()  # still the first one's
    finally:
        live.close()


def test_unix_identities_are_told_from_zeromq_ones() -> None:
    assert is_unix_identity(UNIX_IDENTITY_PREFIX + (7).to_bytes(8, "big"))
    assert not is_unix_identity(b"\x00\x6b\x8b\x45\x67")  # a ROUTER's own identity


@pytest.mark.parametrize(
    "loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"]
)
def test_a_peer_of_another_uid_is_closed_and_counted(
    private_dir: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]
) -> None:
    path = str(private_dir / "q.sock")
    got: list[bytes] = []
    refusals = RefusalLog()
    listener = UnixListener(
        path,
        lambda identity, frames: got.append(identity),
        got.append,
        refusals,
        allowed_uid=os.getuid() + 1,
    )

    async def scenario() -> None:
        listener.bind()
        await listener.start()
        try:
            peer = await asyncio.to_thread(UnixPeer, path)
            try:
                assert await asyncio.to_thread(peer.closed_by_frontend)
            finally:
                peer.close()
        finally:
            listener.close()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(scenario())
    assert refusals.total == 1
    assert listener.refused == {"other_uid": 1, "unknown_peer": 0}
    assert got == []
    assert listener.connections == {}
    assert not exists(path)


def exists(path: str) -> bool:
    return os.path.exists(path)


def _frontend(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "query_frontend", "--insecure-rpc", *args]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHOONER_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_the_frontend_refuses_rpc_unix_in_an_open_directory(tmp_path: Path) -> None:
    d = tmp_path / "open"
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    done = _frontend("--rpc-unix", str(d / "q.sock"))
    assert done.returncode == 2
    assert f"chmod 700 {d}" in done.stderr
    assert not (d / "q.sock").exists()


def test_the_frontend_takes_rpc_unix_from_its_environment(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "q.sock"
    argv = [sys.executable, "-m", "query_frontend", "--insecure-rpc"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHOONER_")}
    env |= {"PYTHONPATH": str(REPO), "SCHOONER_RPC_UNIX": str(path)}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2
    assert "mkdir -m 700" in done.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="only root can give a directory away")
def test_the_frontend_refuses_rpc_unix_in_a_directory_not_its_own(private_dir: Path) -> None:
    os.chown(private_dir, 65534, 65534)
    done = _frontend("--rpc-unix", str(private_dir / "q.sock"))
    assert done.returncode == 2
    assert "belongs to uid 65534" in done.stderr


def test_the_frontend_does_not_take_over_a_socket_another_process_listens_on(
    private_dir: Path,
) -> None:
    path = str(private_dir / "q.sock")
    live = bind_unix_socket(path)
    try:
        done = _frontend("--rpc-unix", path)
    finally:
        live.close()
    assert done.returncode == 2
    assert "another process listens on" in done.stderr


def test_the_frontend_refuses_an_rpc_unix_path_too_long(tmp_path: Path) -> None:
    done = _frontend("--rpc-unix", "/" + "x" * IPC_PATH_MAX)
    assert done.returncode == 2
    assert "longer than a unix socket path" in done.stderr
