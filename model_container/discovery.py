"""Which query frontends a replica serves: the ``--frontend`` forms and DNS discovery.

``--frontend`` (``$SCHOONER_FRONTEND``) is a comma-separated list of entries, each one
of::

    tcp://HOST:PORT        one frontend (also ipc://PATH), as before
    unix://PATH            one frontend on this host, over the direct unix-socket
                           transport (``unix_link``); PATH absolute
    dns+tcp://NAME:PORT    every address NAME resolves to (IPv4 and IPv6), re-resolved
                           every --discovery-interval-s seconds

A Kubernetes headless Service answers with one A record per ready frontend pod, so
``dns+tcp://query-frontend-rpc:7000`` reaches every frontend replica, and follows them
as they come and go. ``parse_frontends`` turns the option into ``FrontendTargets``;
``AddressBook`` resolves it into the set of endpoints wanted now (pure logic over an
injectable resolver, so tests need no DNS); ``DnsWatcher`` runs the book on a thread of
its own, because ``getaddrinfo`` blocks (for seconds when the DNS server is down) and
the serving loop must keep heartbeating meanwhile; ``reconcile`` says which
registrations to open and which to close.

A failed resolution keeps the addresses last resolved for that name (a DNS outage must
not disconnect a replica from healthy frontends) and logs a warning, at most once per
``WARN_EVERY_S`` per name.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger(__name__)

DNS_SCHEME = "dns+tcp://"
DEFAULT_DISCOVERY_INTERVAL_S = 5.0
WARN_EVERY_S = 60.0  # at most one warning per name this often while resolution fails
# The longest ipc:// path: a unix socket's ``sun_path`` is 108 bytes with its NUL.
IPC_PATH_MAX = 107

# host: a name, an IPv4 address, or an IPv6 address in brackets.
_TCP = re.compile(r"^tcp://(?P<host>\[[0-9A-Fa-f:.%\w]+\]|[^\s/:\[\]]+):(?P<port>\d+)$")
_IPC = re.compile(r"^ipc://\S+$")
_UNIX = re.compile(r"^unix://(?P<path>\S*)$")
_DNS = re.compile(
    r"^dns\+tcp://(?P<host>[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\.?):(?P<port>\d+)$"
)

# Resolves (name, port) to IP address strings; raises OSError when it cannot.
Resolver = Callable[[str, int], Sequence[str]]


@dataclass(frozen=True, slots=True)
class FrontendTargets:
    """The parsed ``--frontend``: fixed endpoints, and names to resolve."""

    static: tuple[str, ...] = ()  # e.g. ("tcp://10.0.0.5:7000",)
    dns: tuple[tuple[str, int], ...] = ()  # e.g. (("query-frontend-rpc", 7000),)

    @property
    def discovers(self) -> bool:
        return bool(self.dns)

    def describe(self) -> str:
        return ", ".join([*self.static, *(f"{DNS_SCHEME}{h}:{p}" for h, p in self.dns)])


def parse_frontends(spec: str) -> FrontendTargets:
    """Parse ``--frontend``; raises ``ValueError`` with a message that shows the forms."""
    entries = [entry.strip() for entry in spec.split(",")]
    if not spec.strip() or any(not entry for entry in entries):
        raise ValueError(f"frontend address {spec!r} has an empty entry; {_FORMS}")
    static: list[str] = []
    dns: list[tuple[str, int]] = []
    for entry in entries:
        if m := _DNS.match(entry):
            target = (m["host"].rstrip(".").lower(), _port(entry, m["port"]))
            if target not in dns:
                dns.append(target)
        elif m := _TCP.match(entry):
            _port(entry, m["port"])
            if entry not in static:
                static.append(entry)
        elif _IPC.match(entry):
            if len(entry[len("ipc://") :].encode()) > IPC_PATH_MAX:
                raise ValueError(
                    f"frontend address {entry!r}: a unix socket path has at most "
                    f"{IPC_PATH_MAX} bytes"
                )
            if entry not in static:
                static.append(entry)
        elif m := _UNIX.match(entry):
            _unix_path(entry, m["path"])
            if entry not in static:
                static.append(entry)
        else:
            raise ValueError(f"frontend address {entry!r} is not of a known form; {_FORMS}")
    return FrontendTargets(tuple(static), tuple(dns))


_FORMS = (
    "use tcp://HOST:PORT, ipc://PATH or unix:///ABSOLUTE/PATH, a comma-separated list of "
    "those, or dns+tcp://NAME:PORT (every address NAME resolves to)"
)


def _unix_path(entry: str, path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(
            f"frontend address {entry!r}: the unix socket's path must be absolute "
            "(unix:///run/schooner/query.sock)"
        )
    if len(path.encode()) > IPC_PATH_MAX:
        raise ValueError(
            f"frontend address {entry!r}: a unix socket path has at most {IPC_PATH_MAX} bytes"
        )


def _port(entry: str, text: str) -> int:
    port = int(text)
    if not 0 < port < 65536:
        raise ValueError(f"frontend address {entry!r}: port {port} is not in 1..65535")
    return port


def resolve_host(host: str, port: int) -> list[str]:
    """Every IPv4 and IPv6 address of ``host``, deduplicated, in resolver order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses: list[str] = []
    for family, *_, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = str(sockaddr[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def endpoint(address: str, port: int) -> str:
    """The ZeroMQ endpoint of an IP address: IPv6 goes in brackets."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    return f"tcp://[{address}]:{port}" if ip.version == 6 else f"tcp://{address}:{port}"


@dataclass(slots=True)
class _NameState:
    endpoints: frozenset[str] = frozenset()
    failing: bool = False
    last_warning: float | None = None


@dataclass(slots=True)
class AddressBook:
    """The endpoints wanted now: the static ones plus what each name last resolved to."""

    targets: FrontendTargets
    resolver: Resolver = resolve_host
    _names: dict[tuple[str, int], _NameState] = field(default_factory=dict)

    def refresh(self, now: float) -> frozenset[str]:
        """Resolve every name once (blocking) and return the endpoints wanted."""
        for host, port in self.targets.dns:
            state = self._names.setdefault((host, port), _NameState())
            try:
                addresses = list(self.resolver(host, port))
                if not addresses:
                    raise OSError("no address")
                endpoints = frozenset(endpoint(a, port) for a in addresses)
            except (OSError, ValueError) as exc:
                self._failed(host, port, state, exc, now)
                continue
            if state.failing:
                logger.info("%s%s:%d resolves again", DNS_SCHEME, host, port)
            state.failing = False
            state.last_warning = None
            state.endpoints = endpoints
        return self.current()

    def current(self) -> frozenset[str]:
        wanted = set(self.targets.static)
        for state in self._names.values():
            wanted |= state.endpoints
        return frozenset(wanted)

    def _failed(self, host: str, port: int, state: _NameState, exc: Exception, now: float) -> None:
        state.failing = True
        if state.last_warning is not None and now - state.last_warning < WARN_EVERY_S:
            logger.debug("cannot resolve %s: %s", host, exc)
            return
        state.last_warning = now
        logger.warning(
            "cannot resolve %s%s:%d (%s); keeping its %d known frontend(s), retrying",
            DNS_SCHEME,
            host,
            port,
            exc,
            len(state.endpoints),
        )


def reconcile(current: Iterable[str], wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """The endpoints to register with (in ``wanted`` but not ``current``) and to leave."""
    have, want = set(current), set(wanted)
    return sorted(want - have), sorted(have - want)


class DnsWatcher:
    """Runs ``book.refresh`` now and every ``interval_s`` on a daemon thread.

    Each result is kept until ``take`` collects it, and ``wake`` is called so that the
    serving loop's poll returns; results that were not collected in time are replaced
    by newer ones (only the latest set matters).
    """

    def __init__(
        self,
        book: AddressBook,
        interval_s: float,
        wake: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"discovery interval must be positive, got {interval_s}")
        self._book = book
        self._interval_s = interval_s
        self._wake = wake
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: frozenset[str] | None = None
        self._stop = threading.Event()
        # A daemon: a resolver stuck in getaddrinfo must not hold up the process's exit.
        self._thread = threading.Thread(target=self._run, name="frontend-discovery", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def take(self) -> frozenset[str] | None:
        """The latest resolved set, once; None if nothing new since the last call."""
        with self._lock:
            latest, self._latest = self._latest, None
        return latest

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                wanted = self._book.refresh(self._clock())
            except Exception as exc:  # a resolver bug must not end discovery
                logger.exception("frontend discovery failed: %s", exc)
            else:
                with self._lock:
                    self._latest = wanted
                self._wake()
            self._stop.wait(self._interval_s)
