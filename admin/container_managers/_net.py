"""Addresses and ports as every container manager needs them."""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import Callable, Container, Mapping
from pathlib import Path
from typing import Final

from admin._files import describe
from admin._http import JSONClient
from admin.exceptions import (
    ContainerManagerError,
    InvalidRequestError,
    SchoonerError,
    TLSVerificationError,
)

# Bind addresses that are no address to dial, and what a client on this host dials instead.
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def netloc(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def connect_host(host: str) -> str:
    """The address a client on this host dials: a wildcard bind address is not one."""
    return _WILDCARDS.get(host, host)


def check_port(what: str, port: int) -> None:
    """Raise ``InvalidRequestError`` unless ``port`` (the setting ``what``) is an integer
    in 1..65535."""
    if isinstance(port, bool) or not isinstance(port, int):
        raise InvalidRequestError(
            f"{what}={port!r} is not a port number: use an integer in 1..65535"
        )
    if not 0 < port < 65536:
        raise InvalidRequestError(f"{what}={port} is out of range: use a port in 1..65535")


def check_distinct_ports(ports: Mapping[str, int | None], manager: str) -> None:
    """Raise ``InvalidRequestError`` naming two settings of ``ports`` (setting -> port,
    ``None`` for one not in use) that hold the same port: the second server to start
    would die on bind, and the cluster would fail later with a confusing error."""
    seen: dict[int, str] = {}
    for what, port in ports.items():
        if port is None:
            continue
        if port in seen:
            raise InvalidRequestError(
                f"{seen[port]} and {what} are both {port}: each server of the cluster needs "
                f"its own port; pass {manager}(...) a different {what}"
            )
        seen[port] = what


def port_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` now; ``ContainerManagerError`` when the
    answer is not "in use" but something else (an address that is not this machine's,
    a port this user may not bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As the servers themselves do, so a port in TIME_WAIT after a restart is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return False
        raise ContainerManagerError(
            f"cannot bind port {port} on {host}: {describe(exc)}; pass host= an address of "
            "this machine, and ports this user may bind"
        ) from exc
    return True


def require_ports_free(host: str, ports: Mapping[str, int], *, holder: str, manager: str) -> None:
    """Raise ``ContainerManagerError`` naming the ``ports`` (setting -> port) in use on
    ``host``: ``holder`` (another Schooner, as ``manager`` knows it) or another program."""
    busy = [f"{what}={port}" for what, port in ports.items() if not port_free(host, port)]
    if busy:
        raise ContainerManagerError(
            f"port(s) in use on {host}: {', '.join(busy)}. {holder} or another program holds "
            f"them: stop it, or pass other ports to {manager}(...)"
        )


def free_port(host: str, avoid: Container[int] = ()) -> int:
    """A port nothing listens on at ``host`` now (the kernel's pick), not in ``avoid``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((host, 0))
                port = int(sock.getsockname()[1])
        except OSError as exc:
            raise ContainerManagerError(
                f"cannot pick a free port on {host}: {describe(exc)}; pass host= an address "
                "of this machine (127.0.0.1 by default)"
            ) from exc
        if port not in avoid:
            return port


def healthz_check(url: str, verify: ssl.SSLContext | bool = True) -> Callable[[], bool]:
    """A check that a frontend at ``url`` answers ``GET /healthz`` (an https one verified
    with ``verify``; a certificate it does not trust fails at once, waiting won't help)."""

    def check() -> bool:
        with JSONClient(url, timeout=2.0, verify=verify) as client:
            try:
                client.request("GET", "/healthz")
            except TLSVerificationError:
                raise
            except SchoonerError:
                return False
        return True

    return check


def absolute_path(path: str | os.PathLike[str] | None) -> str | None:
    """A path as the children (whose working directory is the data dir) find it."""
    return None if not path else str(Path(path).expanduser().absolute())


def tls_files(
    certfile: str | os.PathLike[str] | None, keyfile: str | os.PathLike[str] | None
) -> tuple[str | None, str | None]:
    """The certificate and key files, absolute; ``InvalidRequestError`` unless both or
    neither are given."""
    if bool(certfile) != bool(keyfile):
        raise InvalidRequestError(
            "TLS needs tls_certfile= and tls_keyfile= together (the frontends' certificate "
            "and its private key, PEM files): pass both, or neither for plain HTTP"
        )
    return absolute_path(certfile), absolute_path(keyfile)
