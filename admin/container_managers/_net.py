"""Addresses and ports as every container manager needs them."""

from __future__ import annotations

import socket
from collections.abc import Callable, Container

from admin._http import JSONClient
from admin.exceptions import SchoonerError


def netloc(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def port_free(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As the servers themselves do, so a port in TIME_WAIT after a restart is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, avoid: Container[int] = ()) -> int:
    """A port nothing listens on at ``host`` now (the kernel's pick), not in ``avoid``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    while True:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if port not in avoid:
            return port


def healthz_check(url: str) -> Callable[[], bool]:
    """A check that a frontend at ``url`` answers ``GET /healthz``."""

    def check() -> bool:
        client = JSONClient(url, timeout=2.0)
        try:
            client.request("GET", "/healthz")
        except SchoonerError:
            return False
        finally:
            client.close()
        return True

    return check
