"""One model-container process per query frontend: what a Kubernetes model pod runs.

A model replica (``python -m model_container``) dials exactly one query frontend. On
Kubernetes the query frontend runs as several pods (scaled by a HorizontalPodAutoscaler),
and every frontend must reach every model replica. Until ``model_container`` can hold
several frontend connections itself (see docs/kubernetes.md), each model pod runs this
supervisor: it resolves the query frontends' headless Service to the frontend pods'
addresses, runs one model-container process per address, and reconciles every few
seconds as frontends come and go.

This file is self-contained (standard library only) and runs as a script: the
Kubernetes manager ships it to model pods in a ConfigMap, so that it works with every
model image, unchanged. Environment (the model container's own ``SCHOONER_*``
variables pass through to every child)::

    SCHOONER_FRONTEND_SERVICE    HOST:PORT      every A/AAAA record of HOST, at PORT ...
    SCHOONER_FRONTENDS           tcp://H:P,...  ... or this fixed list of frontends
    SCHOONER_REPLICA_ID          the pod's name; each child is <id>@<frontend host:port>
    SCHOONER_METRICS_PORT        base port: the child in slot k serves metrics on base + k
    SCHOONER_RESOLVE_INTERVAL_S  seconds between DNS lookups (default 2)

A failed lookup changes nothing (a DNS hiccup must not stop serving). Exit status: 0
after SIGTERM/SIGINT, once the children have stopped; when a child exits on its own the
others are stopped and the supervisor exits with that child's status (2: the model
cannot be loaded), so that Kubernetes restarts the container and reports why. As the
container's first process it also reaps orphaned grandchildren.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

logger = logging.getLogger("schooner.fanout")

DEFAULT_INTERVAL_S = 2.0
STOP_TIMEOUT_S = 10.0
EXIT_CONFIG = 2  # as model_container: the configuration is invalid

Lookup = Callable[[], "set[str] | None"]


# --------------------------------------------------------------------------- pure logic


def frontend_address(host: str, port: int) -> str:
    """A ZeroMQ TCP address; IPv6 hosts in brackets."""
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def child_replica_id(base: str, address: str) -> str:
    """``<pod>@<host>:<port>``: one replica id per (pod, frontend) connection."""
    return f"{base}@{address.removeprefix('tcp://')}"


def plan(running: Iterable[str], wanted: Iterable[str]) -> tuple[list[str], list[str]]:
    """The addresses to start a child for, and those whose child to stop."""
    have, want = set(running), set(wanted)
    return sorted(want - have), sorted(have - want)


def free_slot(used: Iterable[int]) -> int:
    """The lowest slot (metrics port offset) no child holds."""
    taken = set(used)
    slot = 0
    while slot in taken:
        slot += 1
    return slot


def child_env(
    env: Mapping[str, str], address: str, replica_base: str, metrics_base: int, slot: int
) -> dict[str, str]:
    out = dict(env)
    for key in ("SCHOONER_FRONTEND_SERVICE", "SCHOONER_FRONTENDS", "SCHOONER_RESOLVE_INTERVAL_S"):
        out.pop(key, None)
    out["SCHOONER_FRONTEND"] = address
    out["SCHOONER_REPLICA_ID"] = child_replica_id(replica_base, address)
    out["SCHOONER_METRICS_PORT"] = str(metrics_base + slot) if metrics_base else "0"
    return out


def exit_status(returncode: int) -> int:
    """A child's status as this process's own: a signal N becomes 128 + N, and 0 -- a
    model container that stopped although nobody asked it to -- becomes 1."""
    if returncode < 0:
        return 128 - returncode
    return returncode or 1


def parse_service(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"SCHOONER_FRONTEND_SERVICE={value!r} is not HOST:PORT")
    return host, int(port)


def dns_lookup(host: str, port: int) -> Lookup:
    """Every address ``host`` resolves to, as frontend addresses; ``None`` if it does not
    resolve (no frontend pod yet, or DNS is unavailable for a moment)."""

    def lookup() -> set[str] | None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            logger.debug("cannot resolve %s: %s", host, exc)
            return None
        return {frontend_address(str(info[4][0]), port) for info in infos}

    return lookup


# --------------------------------------------------------------------------- the supervisor


@dataclass
class Child:
    address: str
    slot: int
    proc: subprocess.Popen[bytes]
    stop_deadline: float | None = None  # set once asked to stop


@dataclass
class Fanout:
    """Keeps one child per frontend address that ``lookup`` returns."""

    command: Sequence[str]
    lookup: Lookup
    replica_base: str
    metrics_base: int = 0
    interval_s: float = DEFAULT_INTERVAL_S
    stop_timeout_s: float = STOP_TIMEOUT_S
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    children: dict[str, Child] = field(default_factory=dict)  # address -> serving child
    retiring: list[Child] = field(default_factory=list)  # asked to stop, not yet gone
    statuses: dict[int, int] = field(default_factory=dict)  # pid -> exit status, reaped
    stopping: bool = False
    _wake_r: int = -1

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT (0) or until a child exits on its own (its status)."""
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        old_fd = signal.set_wakeup_fd(wake_w)
        handlers = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD)
        }
        try:
            return self._loop()
        finally:
            self._stop_children()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(old_fd)
            os.close(self._wake_r)
            os.close(wake_w)

    def _on_signal(self, signum: int, frame: object) -> None:
        if signum != signal.SIGCHLD:
            logger.info("received %s: stopping", signal.Signals(signum).name)
            self.stopping = True

    def _loop(self) -> int:
        next_lookup = time.monotonic()
        last_seen: set[str] | None = None
        while not self.stopping:
            now = time.monotonic()
            if now >= next_lookup:
                wanted = self.lookup()
                if wanted is not None:
                    if wanted != last_seen:
                        logger.info("query frontends: %s", ", ".join(sorted(wanted)) or "none")
                    last_seen = wanted
                    self.reconcile(wanted)
                next_lookup = now + self.interval_s
            failed = self.reap()
            if failed is not None:
                return failed
            deadlines = [next_lookup, *(c.stop_deadline or next_lookup for c in self.retiring)]
            timeout = max(0.0, min(deadlines) - time.monotonic())
            with contextlib.suppress(InterruptedError):
                select.select([self._wake_r], [], [], timeout)
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        return 0

    def reconcile(self, wanted: set[str]) -> None:
        start, stop = plan(self.children, wanted)
        for address in stop:
            child = self.children.pop(address)
            logger.info("frontend %s is gone: stopping its model container", address)
            self._ask_to_stop(child)
        for address in start:
            slot = free_slot(c.slot for c in [*self.children.values(), *self.retiring])
            env = child_env(self.env, address, self.replica_base, self.metrics_base, slot)
            proc = subprocess.Popen(list(self.command), env=env, stdin=subprocess.DEVNULL)
            self.children[address] = Child(address, slot, proc)
            logger.info(
                "serving frontend %s as replica %s (pid %d)",
                address,
                env["SCHOONER_REPLICA_ID"],
                proc.pid,
            )

    def reap(self) -> int | None:
        """Collect exited processes (ours and orphans); the status to exit with if a
        serving child exited on its own, else ``None``."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            self.statuses[pid] = os.waitstatus_to_exitcode(status)
        now = time.monotonic()
        for child in list(self.retiring):
            if self._exited(child) is not None:
                self.retiring.remove(child)
            elif child.stop_deadline is not None and now >= child.stop_deadline:
                with contextlib.suppress(ProcessLookupError):
                    child.proc.kill()
                child.stop_deadline = None  # killed: waits for the reaping only
        for child in self.children.values():
            code = self._exited(child)
            if code is not None:
                logger.error(
                    "the model container serving %s exited with status %d: restarting the pod",
                    child.address,
                    code,
                )
                del self.children[child.address]
                return exit_status(code)
        return None

    def _exited(self, child: Child) -> int | None:
        code = self.statuses.pop(child.proc.pid, None)
        if code is not None:
            child.proc.returncode = code  # reaped here: keep Popen from waiting on it
        return child.proc.returncode

    def _ask_to_stop(self, child: Child) -> None:
        with contextlib.suppress(ProcessLookupError):
            child.proc.terminate()
        child.stop_deadline = time.monotonic() + self.stop_timeout_s
        self.retiring.append(child)

    def _stop_children(self) -> None:
        for child in list(self.children.values()):
            self._ask_to_stop(child)
        self.children.clear()
        deadline = time.monotonic() + self.stop_timeout_s
        while self.retiring and time.monotonic() < deadline:
            self.reap()
            if self.retiring:
                time.sleep(0.05)
        for child in self.retiring:
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
                child.proc.wait(timeout=self.stop_timeout_s)
        self.retiring.clear()


# --------------------------------------------------------------------------- entry point


def from_environment(env: Mapping[str, str], command: Sequence[str]) -> Fanout:
    """The supervisor the environment describes; ``ValueError`` says what is wrong."""
    service = env.get("SCHOONER_FRONTEND_SERVICE", "").strip()
    fixed = [a.strip() for a in env.get("SCHOONER_FRONTENDS", "").split(",") if a.strip()]
    if bool(service) == bool(fixed):
        raise ValueError("set exactly one of SCHOONER_FRONTEND_SERVICE and SCHOONER_FRONTENDS")
    lookup: Lookup
    if service:
        lookup = dns_lookup(*parse_service(service))
    else:
        frozen = set(fixed)
        lookup = lambda: set(frozen)  # noqa: E731
    base = env.get("SCHOONER_REPLICA_ID") or socket.gethostname()
    try:
        metrics = int(env.get("SCHOONER_METRICS_PORT") or 0)
        interval = float(env.get("SCHOONER_RESOLVE_INTERVAL_S") or DEFAULT_INTERVAL_S)
    except ValueError as exc:
        raise ValueError(f"SCHOONER_METRICS_PORT / SCHOONER_RESOLVE_INTERVAL_S: {exc}") from None
    if interval <= 0:
        raise ValueError("SCHOONER_RESOLVE_INTERVAL_S must be positive")
    return Fanout(command, lookup, base, metrics, interval, env=dict(env))


def _configure_logging(level: str) -> None:
    """This script's own lines to stderr, beside its children's (which configure theirs)."""
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper() if level.upper() in ("DEBUG", "INFO", "WARNING") else "INFO")


def main(argv: Sequence[str] | None = None) -> int:
    """``fanout.py [-- COMMAND...]``; the command defaults to this Python's model_container."""
    args = list(sys.argv[1:] if argv is None else argv)
    command = args[args.index("--") + 1 :] if "--" in args else []
    _configure_logging(os.environ.get("SCHOONER_LOG_LEVEL", "INFO"))
    try:
        fanout = from_environment(os.environ, command or [sys.executable, "-m", "model_container"])
    except ValueError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    return fanout.run()


if __name__ == "__main__":
    sys.exit(main())
