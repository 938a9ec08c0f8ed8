"""Free ports for tests that start a server (Redis, a frontend, a registry, a ROUTER) on a
port they choose and tell others about.

Ports are drawn from below the kernel's ephemeral range, where outgoing connections get
their local port: an outgoing connection (an image build makes many; a replica
reconnecting to a port nobody listens on yet can even connect to itself) never takes
one between our check and the server's bind. 31000-31100 is left to others on the test
machines. Drawn at random, so that sessions running side by side rarely try the same
port; and never handed out twice in a session, so that two servers started one after
the other never get the same port before the first has bound it.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

#: What ``LocalContainerManager`` and ``DockerContainerManager`` take, for ``cluster_ports``.
CLUSTER_PORTS = ("query_port", "management_port", "rpc_port", "redis_port")


def _ephemeral_low() -> int:
    """The first port the kernel hands out to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


PORTS = [p for p in range(30000, min(_ephemeral_low(), 32768)) if not 31000 <= p <= 31100]
_handed_out: set[int] = set()


def _bindable(host: str, port: int) -> bool:
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *more_hosts: str) -> int:
    """A port nothing is bound to on ``host`` now, nor on any of ``more_hosts`` (the pods
    of a headless Service share one port on several addresses)."""
    candidates = [p for p in PORTS if p not in _handed_out]
    random.shuffle(candidates)
    for port in candidates:
        if all(_bindable(h, port) for h in (host, *more_hosts)):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port left in {PORTS[0]}-{PORTS[-1]}")


def consecutive_free_ports(count: int, host: str = "127.0.0.1") -> int:
    """The first of ``count`` consecutive free ports (several query frontends' RPC ports)."""
    candidates = [p for p in PORTS if all(p + i in PORTS for i in range(count))]
    random.shuffle(candidates)
    for port in candidates:
        run = range(port, port + count)
        if not _handed_out.intersection(run) and all(_bindable(host, p) for p in run):
            _handed_out.update(run)
            return port
    raise RuntimeError(f"no {count} consecutive free ports left in {PORTS[0]}-{PORTS[-1]}")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` different free ports on ``host``."""
    return [free_port(host) for _ in range(count)]


def cluster_ports() -> dict[str, int]:
    """Free ports for a cluster's query, management, RPC and Redis servers, by setting."""
    return dict(zip(CLUSTER_PORTS, free_ports(len(CLUSTER_PORTS)), strict=True))
