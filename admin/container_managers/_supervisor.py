"""The local cluster's supervisor: ``python -m admin.container_managers._supervisor DATA_DIR``.

The local manager launches it detached (so it outlives the notebook or shell that
started the cluster) and records it as ``run/supervisor.json``. It runs every program
the manager specified under ``supervisor/programs/`` as its own child, each in its own
session with its output appended to its log, and keeps ``run/<name>.json`` (pid and
create time) current. When a program exits it is started again after a backoff, or
marked failed after a crash loop (``_supervision``). ``SIGHUP`` makes it read the specs
again (it also looks every ``RESCAN_S``); ``SIGTERM`` stops every program -- replicas,
query frontends, management frontend, Redis, in that order, each SIGTERM then SIGKILL
-- and then the supervisor exits, restarting nothing meanwhile.

A new supervisor adopts the programs still running from a previous one (their pid
records match a live process): it watches them through a pidfd instead of starting
duplicates. One supervisor per data dir: the second to take ``supervisor/lock`` exits.

Memory limits: a program's ``memory_limit`` is enforced with cgroup v2 when the
supervisor's cgroup is delegated to this user (writable, memory controller available),
else with ``RLIMIT_AS`` set in the child before it runs.

The state goes to ``supervisor/state.json`` and, best effort, to the Redis hash
``{prefix}:supervision`` (one field per program, JSON; ``docs/redis-schema.md``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import resource
import select
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import psutil

from admin.container_managers import _processes as procs
from admin.container_managers._processes import ProcessRecord, RunDir, log_tail
from admin.container_managers._scrape_targets import write_local_targets
from admin.container_managers._supervision import (
    BACKOFF,
    EXIT_CONFIG,
    FAILED,
    REPLICA,
    RUNNING,
    STABLE_AFTER_S,
    STOP_ORDER,
    STOPPING,
    SUPERVISOR,
    ProgramSpec,
    ProgramState,
    SupervisorFiles,
    backoff_delay,
    crash_looping,
    exit_reason,
    exits_in_window,
    stop_timeout,
)

logger = logging.getLogger("schooner.supervisor")

RESCAN_S: Final = 2.0
PUBLISH_EVERY_S: Final = 10.0
PUBLISH_RETRY_S: Final = 0.5
_LOG_LINES: Final = 15


class _Program:
    """A program as the supervisor runs it."""

    def __init__(self, spec: ProgramSpec) -> None:
        self.spec = spec
        self.popen: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.create_time = 0.0
        self.pidfd: int | None = None
        self.state = BACKOFF
        self.restarts = 0
        self.reason = ""
        self.log_tail = ""
        self.since = time.time()
        self.started_at = 0.0  # monotonic
        self.exits: deque[float] = deque(maxlen=32)
        self.in_a_row = 0
        self.next_start: float | None = time.monotonic()  # start at once
        self.kill_at: float | None = None
        self.then: ProgramSpec | None = None  # after an intended stop: run this (None: forget)
        self.cgroup: Path | None = None
        self.oom_kills = 0

    @property
    def alive(self) -> bool:
        return self.pidfd is not None

    def to_state(self) -> ProgramState:
        return ProgramState(
            name=self.spec.name,
            role=self.spec.role,
            state=self.state,
            pid=self.pid,
            create_time=self.create_time,
            restarts=self.restarts,
            reason=self.reason,
            since=self.since,
            revision=self.spec.revision,
            memory_limit=self.spec.memory_limit,
            labels=dict(self.spec.labels),
            log_tail=self.log_tail,
        )


class Supervisor:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files = SupervisorFiles(data_dir)
        self.run = RunDir(data_dir / "run")
        self.programs: dict[str, _Program] = {}
        self.reload = True
        self.shutdown = False
        self.dirty = True
        self.last_scan = 0.0
        self.last_publish = 0.0
        self.published: set[str] = set()
        self.started = time.time()
        self.cgroups = _delegated_cgroup()
        # What a previous supervisor reported: restart counts survive adoption.
        self.previous = self.files.program_states()
        self._redis: Any = None
        self._wake_r, self._wake_w = os.pipe()
        for fd in (self._wake_r, self._wake_w):
            os.set_blocking(fd, False)

    # ------------------------------------------------------------------ main loop

    def serve(self) -> int:
        signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGHUP, self._on_hup)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        logger.info("supervisor %d serving %s", os.getpid(), self.data_dir)
        while not self.shutdown:
            now = time.monotonic()
            if self.reload or now - self.last_scan >= RESCAN_S:
                self.reload = False
                self.last_scan = now
                if not self.data_dir.is_dir():
                    logger.warning("data dir %s is gone: stopping", self.data_dir)
                    break
                self.apply_specs()
                if not self.programs and not (self.data_dir / "cluster.json").is_file():
                    logger.info("the cluster was stopped: nothing to supervise")
                    break
            self.run_timers(time.monotonic())
            self.write_state()
            if time.monotonic() - self.last_publish >= PUBLISH_EVERY_S:
                self.publish()
            self.wait(self.next_deadline())
        self.stop_everything()
        return 0

    def _on_hup(self, signum: int, frame: Any) -> None:
        self.reload = True

    def _on_term(self, signum: int, frame: Any) -> None:
        self.shutdown = True

    def next_deadline(self) -> float:
        now = time.monotonic()
        at = [self.last_scan + RESCAN_S, self.last_publish + PUBLISH_EVERY_S]
        for p in self.programs.values():
            if p.next_start is not None and not p.alive:
                at.append(p.next_start)
            if p.kill_at is not None:
                at.append(p.kill_at)
        return max(0.0, min(at) - now)

    def wait(self, timeout: float) -> None:
        fds = {p.pidfd: p for p in self.programs.values() if p.pidfd is not None}
        try:
            ready, _, _ = select.select([self._wake_r, *fds], [], [], timeout)
        except InterruptedError:
            return
        for fd in ready:
            if fd == self._wake_r:
                with contextlib.suppress(OSError):
                    while os.read(self._wake_r, 512):
                        pass
            elif fd in fds:
                self.exited(fds[fd])

    # ------------------------------------------------------------------ specs

    def apply_specs(self) -> None:
        wanted = {s.name: s for s in self.files.load_specs()}
        for name, p in list(self.programs.items()):
            spec = wanted.get(name)
            if spec is None:
                self.stop(p, then=None)
            elif spec.revision != p.spec.revision and (p.then is None or p.then != spec):
                if p.alive:
                    self.stop(p, then=spec)
                else:  # in backoff or failed: the new spec starts afresh
                    fresh = _Program(spec)
                    fresh.restarts = p.restarts
                    self.programs[name] = fresh
                    self.dirty = True
        for name, spec in wanted.items():
            if name not in self.programs:
                p = _Program(spec)
                self.programs[name] = p
                self.adopt(p)
                self.dirty = True

    def adopt(self, p: _Program) -> None:
        """Watch the process a previous supervisor left running, if there is one."""
        record = self.run.load(p.spec.name)
        if record is None or record.argv != p.spec.argv or procs.find(record) is None:
            return
        try:
            pidfd = os.pidfd_open(record.pid)
        except OSError:
            return
        if procs.find(record) is None:  # exited meanwhile, or the pid was reused
            os.close(pidfd)
            return
        p.pid, p.create_time, p.pidfd = record.pid, record.create_time, pidfd
        before = self.previous.get(p.spec.name)
        if before is not None and before.pid == record.pid:
            p.restarts, p.reason = before.restarts, before.reason
        p.state, p.next_start = RUNNING, None
        p.started_at = time.monotonic()
        p.since = time.time()
        logger.info("adopted %s (pid %d)", p.spec.name, p.pid)

    # ------------------------------------------------------------------ timers

    def run_timers(self, now: float) -> None:
        for p in list(self.programs.values()):
            if p.kill_at is not None and now >= p.kill_at and p.alive:
                logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", p.spec.name, p.pid)
                _signal_group(p.pid, signal.SIGKILL)
                p.kill_at = None
            due = p.next_start is not None and now >= p.next_start
            if due and not p.alive and p.state == BACKOFF:
                self.start(p)

    # ------------------------------------------------------------------ processes

    def start(self, p: _Program) -> None:
        spec = p.spec
        p.next_start = None
        log = Path(spec.log_path)
        try:
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("ab") as out:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                out.write(
                    f"\n===== {stamp} schooner supervisor started: {' '.join(spec.argv)}\n".encode()
                )
                out.flush()
                cgroup = self._cgroup_for(spec)
                p.popen = subprocess.Popen(
                    spec.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=spec.cwd,
                    env=spec.env,
                    start_new_session=True,
                    preexec_fn=_child_setup(spec.memory_limit, cgroup),  # noqa: PLW1509
                )
            p.cgroup = cgroup
            p.oom_kills = _oom_kills(cgroup)
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            p.popen = None
            self.ended(p, f"cannot start: {exc}", returncode=None)
            return
        p.pid = p.popen.pid
        try:
            p.create_time = float(psutil.Process(p.pid).create_time())
            p.pidfd = os.pidfd_open(p.pid)
        except (psutil.Error, OSError):
            p.create_time = 0.0
            p.pidfd = None
            self.reap(p)
            return
        if p.state != RUNNING and p.exits:
            p.restarts += 1
        p.state = RUNNING
        p.started_at = time.monotonic()
        p.since = time.time()
        self.dirty = True
        self.run.save(
            ProcessRecord(
                name=spec.name,
                role=spec.role,
                pid=p.pid,
                create_time=p.create_time,
                argv=list(spec.argv),
                log_path=spec.log_path,
                model=spec.labels.get("model", ""),
                version=spec.labels.get("version", ""),
                replica_id=spec.labels.get("replica_id", ""),
                metrics_addr=spec.labels.get("metrics_addr", ""),
            )
        )
        logger.info("started %s (pid %d)", spec.name, p.pid)
        self.write_scrape_targets()

    def stop(self, p: _Program, then: ProgramSpec | None) -> None:
        """Stop a program on purpose: SIGTERM now, SIGKILL later; then run ``then``."""
        p.then = then
        p.next_start = None
        if not p.alive:
            self.after_stop(p)
            return
        if p.state != STOPPING:
            p.state = STOPPING
            p.since = time.time()
            p.kill_at = time.monotonic() + stop_timeout(p.spec.role)
            _signal_group(p.pid, signal.SIGTERM)
            self.dirty = True

    def after_stop(self, p: _Program) -> None:
        then = p.then
        if then is None:
            self.programs.pop(p.spec.name, None)
            self.run.remove_name(p.spec.name)
            logger.info("stopped %s", p.spec.name)
            self.write_scrape_targets()
        else:
            fresh = _Program(then)
            fresh.restarts = p.restarts
            self.programs[then.name] = fresh
            self.start(fresh)
        self.dirty = True

    def exited(self, p: _Program) -> None:
        returncode = self.reap(p)
        if p.state == STOPPING:
            p.kill_at = None
            self.after_stop(p)
            return
        oom = p.cgroup is not None and _oom_kills(p.cgroup) > p.oom_kills
        reason = exit_reason(returncode, memory_limit=p.spec.memory_limit, oom_killed=oom)
        self.ended(p, reason, returncode)

    def reap(self, p: _Program) -> int | None:
        if p.pidfd is not None:
            with contextlib.suppress(OSError):
                os.close(p.pidfd)
            p.pidfd = None
        returncode = None
        if p.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                returncode = p.popen.wait(timeout=5)
            p.popen = None
        return returncode

    def ended(self, p: _Program, reason: str, returncode: int | None) -> None:
        """An unintended exit: back off and restart, or mark failed."""
        now = time.monotonic()
        if p.started_at and now - p.started_at >= STABLE_AFTER_S:
            p.in_a_row = 0
        p.in_a_row += 1
        p.exits.append(now)
        p.log_tail = log_tail(p.spec.log_path, _LOG_LINES)
        p.since = time.time()
        p.kill_at = None
        self.dirty = True
        if p.spec.role == REPLICA and returncode == EXIT_CONFIG:
            p.state, p.reason, p.next_start = FAILED, f"{reason}: its model cannot be loaded", None
        elif crash_looping(p.exits, now):
            count = exits_in_window(p.exits, now)
            p.state, p.next_start = FAILED, None
            p.reason = f"crash loop: {count} exits within a minute; last: {reason}"
        else:
            delay = backoff_delay(p.in_a_row)
            p.state, p.reason, p.next_start = BACKOFF, reason, now + delay
            logger.warning(
                "%s (pid %d): %s; restarting in %.2f s", p.spec.name, p.pid, reason, delay
            )
            return
        logger.error("%s failed: %s", p.spec.name, p.reason)

    def stop_everything(self) -> None:
        """Stop every program in order, restarting nothing, and forget them."""
        for role in STOP_ORDER:
            group = [p for p in self.programs.values() if p.spec.role == role]
            if role == "redis":
                self.write_state()
                self.publish(final=True)
            for p in group:
                p.next_start = None
                if p.alive:
                    p.state = STOPPING
                    _signal_group(p.pid, signal.SIGTERM)
            deadline = time.monotonic() + stop_timeout(role)
            killed = False
            while any(p.alive for p in group):
                left = deadline - time.monotonic()
                if left <= 0:
                    if killed:
                        break
                    for p in group:
                        if p.alive:
                            _signal_group(p.pid, signal.SIGKILL)
                    killed, deadline = True, time.monotonic() + 5.0
                    continue
                fds = {p.pidfd: p for p in group if p.pidfd is not None}
                ready, _, _ = select.select(list(fds), [], [], min(left, 0.5))
                for fd in ready:
                    self.reap(fds[fd])
            for p in group:
                if not p.alive:
                    self.run.remove_name(p.spec.name)
                    self.programs.pop(p.spec.name, None)
        self.write_state()

    # ------------------------------------------------------------------ reporting

    def write_scrape_targets(self) -> None:
        """Prometheus's targets file (``_scrape_targets``): a replica started again may
        listen on another port. Unchanged content is not rewritten."""
        try:
            write_local_targets(self.data_dir)
        except OSError as exc:
            logger.warning("cannot write the Prometheus targets file: %s", exc)

    def write_state(self) -> None:
        if not self.dirty:
            return
        doc = {
            "supervisor": {"pid": os.getpid(), "started": self.started, "updated": time.time()},
            "programs": {n: p.to_state().to_json() for n, p in sorted(self.programs.items())},
        }
        try:
            self.files.write_state(doc)
        except OSError as exc:
            logger.warning("cannot write %s: %s", self.files.state_file, exc)
            return
        self.dirty = False
        self.publish()

    def publish(self, final: bool = False) -> None:
        """Best effort: the state into ``{prefix}:supervision`` when Redis answers."""
        self.last_publish = time.monotonic()
        client = self._redis_client()
        if client is None:
            return
        key = f"{self._prefix}:supervision"
        fields = {
            n: json.dumps(p.to_state().public_json(), sort_keys=True)
            for n, p in self.programs.items()
        }
        fields["supervisor"] = json.dumps(
            {
                "pid": os.getpid(),
                "started": self.started,
                "updated": time.time(),
                "state": "stopping" if final else RUNNING,
            }
        )
        try:
            pipe = client.pipeline(transaction=True)
            gone = self.published - set(fields)
            if gone:
                pipe.hdel(key, *gone)
            if final:
                pipe.delete(key)
            else:
                pipe.hset(key, mapping=fields)
            pipe.execute()
            self.published = set() if final else set(fields)
        except Exception as exc:
            logger.debug("cannot publish the supervision state to Redis: %s", type(exc).__name__)
            self._redis = None
            self.last_publish -= PUBLISH_EVERY_S - PUBLISH_RETRY_S  # Redis restarting: soon

    _prefix = "schooner"

    def _redis_client(self) -> Any:
        if self._redis is not None:
            return self._redis
        try:
            doc = json.loads((self.data_dir / "cluster.json").read_text(encoding="utf-8"))
            import redis

            from admin.container_managers._credentials import LocalCredentialStore

            self._prefix = str(doc.get("key_prefix") or "schooner")
            host = str(doc.get("host", "127.0.0.1"))
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            url = doc.get("redis_url") or f"redis://{host}:{int(doc['redis_port'])}/0"
            password = None
            if not doc.get("redis_url"):
                creds = LocalCredentialStore(self.data_dir).load()
                password = creds.redis_password if creds is not None else None
            self._redis = redis.Redis.from_url(
                str(url),
                password=password,
                socket_timeout=0.5,
                socket_connect_timeout=0.5,
                retry_on_timeout=False,
            )
        except Exception as exc:
            logger.debug("no Redis for the supervision state: %s", type(exc).__name__)
            return None
        return self._redis

    # ------------------------------------------------------------------ cgroups

    def _cgroup_for(self, spec: ProgramSpec) -> Path | None:
        if not spec.memory_limit or self.cgroups is None:
            return None
        path = self.cgroups / f"schooner-{spec.name}"
        try:
            path.mkdir(exist_ok=True)
            (path / "memory.max").write_text(str(spec.memory_limit))
            with contextlib.suppress(OSError):
                (path / "memory.swap.max").write_text("0")
        except OSError as exc:
            logger.warning("cgroup %s unusable (%s): using RLIMIT_AS", path, exc)
            return None
        return path


def _child_setup(memory_limit: int, cgroup: Path | None) -> Callable[[], None] | None:
    """What the child runs before exec: join its cgroup, else limit its address space."""
    if not memory_limit:
        return None
    if cgroup is not None:
        procs_file = str(cgroup / "cgroup.procs")

        def join() -> None:
            with open(procs_file, "w") as f:
                f.write("0")

        return join

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))

    return limit


def _oom_kills(cgroup: Path | None) -> int:
    if cgroup is None:
        return 0
    try:
        for line in (cgroup / "memory.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def _delegated_cgroup() -> Path | None:
    """A cgroup v2 directory this user may create children with a memory limit in.

    The supervisor moves itself into a leaf (``supervisor``) first: a cgroup whose
    children use a controller may not hold processes itself."""
    root = Path("/sys/fs/cgroup")
    try:
        if not (root / "cgroup.controllers").is_file():
            return None
        line = next(
            (s for s in Path("/proc/self/cgroup").read_text().splitlines() if s.startswith("0::")),
            None,
        )
        if line is None:
            return None
        own = root / line[3:].lstrip("/")
        if "memory" not in (own / "cgroup.controllers").read_text().split():
            return None
        if not os.access(own, os.W_OK) or not os.access(own / "cgroup.procs", os.W_OK):
            return None
        leaf = own / "schooner-supervisor"
        leaf.mkdir(exist_ok=True)
        (leaf / "cgroup.procs").write_text(str(os.getpid()))
        (own / "cgroup.subtree_control").write_text("+memory")
    except (OSError, StopIteration):
        return None
    return own


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(OSError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m admin.container_managers._supervisor DATA_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s supervisor %(levelname)s %(message)s"
    )
    data_dir = Path(args[0]).absolute()
    files = SupervisorFiles(data_dir)
    files.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock = open(files.lock_file, "w", encoding="utf-8")  # noqa: SIM115 -- held until exit
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another supervisor runs {data_dir}: exiting", file=sys.stderr)
        return 0
    # Our own record: a supervisor started by hand is found like one the manager started.
    me = psutil.Process()
    RunDir(data_dir / "run").save(
        ProcessRecord(
            name=SUPERVISOR,
            role=SUPERVISOR,
            pid=me.pid,
            create_time=float(me.create_time()),
            argv=[sys.executable, "-m", "admin.container_managers._supervisor", str(data_dir)],
            log_path=str(data_dir / "logs" / "supervisor.log"),
        )
    )
    try:
        return Supervisor(data_dir).serve()
    finally:
        RunDir(data_dir / "run").remove_name(SUPERVISOR)


if __name__ == "__main__":
    sys.exit(main())
