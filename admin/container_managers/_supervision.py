"""What the local supervisor runs, what it reports, and its restart policy (pure parts).

The local manager says what should run by writing one *program spec* per process
(``supervisor/programs/<name>.json``: argv, environment, working directory, log file,
role, labels, memory limit); the supervisor (``_supervisor``) runs them, restarts them
when they exit, and writes what it sees to ``supervisor/state.json`` (atomically) and,
best effort, to the Redis hash ``{p}:supervision`` (``docs/redis-schema.md``).

A spec's *revision* is the sha256 of its content: when it changes (a new argv, a new
memory limit, or a bumped ``generation`` -- how a rolling restart or a retry of a
failed program is asked for), the supervisor stops the old process and starts the new
one, and that restart is not counted as a crash. The manager knows its change has been
applied when the program's state carries the new revision.

Restart policy: the first restart after an exit comes after ``BACKOFF_FIRST_S``, each
further one in a row waits twice as long, up to ``BACKOFF_CAP_S``; a process that
stayed up ``STABLE_AFTER_S`` starts the count again. ``CRASH_LOOP_EXITS`` exits within
``CRASH_LOOP_WINDOW_S`` mark it ``failed`` (nothing restarts it until its spec changes).
A replica exiting with ``EXIT_CONFIG`` (its model cannot be loaded) fails at once:
restarting would not help.

Exit codes: ``EXIT_RESTART_REQUESTED`` (75) is a replica a query frontend asked to
restart (stuck past the batch timeout, or ejected): restarted like any exit, and
counted. ``EXIT_MEMORY_LIMIT`` (76) is what a replica exits with when its model hit
``MemoryError`` -- under ``RLIMIT_AS`` that is how the memory limit shows; a process
killed by ``SIGKILL`` while its cgroup counted an ``oom_kill`` hit its limit too.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from admin._files import os_errors

BACKOFF_FIRST_S: Final = 0.2
BACKOFF_CAP_S: Final = 15.0
STABLE_AFTER_S: Final = 30.0
CRASH_LOOP_EXITS: Final = 5
CRASH_LOOP_WINDOW_S: Final = 60.0

# model_container.cli.EXIT_CONFIG: the model cannot be loaded; restarting will not help.
EXIT_CONFIG: Final = 2
# A replica a query frontend asked to restart (its batch ran past the batch timeout, or
# it was ejected for failing) exits with this code (model_container's RESTART).
EXIT_RESTART_REQUESTED: Final = 75
# A replica whose model raised MemoryError exits with this code: it hit its memory limit.
EXIT_MEMORY_LIMIT: Final = 76

# States of a program.
RUNNING, BACKOFF, FAILED, STOPPING, STOPPED = "running", "backoff", "failed", "stopping", "stopped"
SETTLED: Final = frozenset({RUNNING, FAILED})

# Roles, and the order the supervisor stops them in.
REDIS, MANAGEMENT, QUERY, REPLICA = "redis", "management", "query", "replica"
# Starts and stops replicas to match the counts recorded in Redis (``_reconciler``):
# stopped first, so that it starts nothing while the rest stops.
RECONCILER = "reconciler"
STOP_ORDER: Final = (RECONCILER, REPLICA, QUERY, MANAGEMENT, REDIS)
SUPERVISOR: Final = "supervisor"  # the supervisor's own pid record: run/supervisor.json


def backoff_delay(exits_in_a_row: int) -> float:
    """Seconds to wait before restarting a process that exited ``exits_in_a_row`` times
    without staying up (1 for the first exit)."""
    n = max(1, exits_in_a_row)
    return float(min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2 ** min(n - 1, 32)))


def exits_in_window(exits: Iterable[float], now: float) -> int:
    """How many of the exit times (monotonic seconds) fall in the crash-loop window."""
    return sum(1 for t in exits if now - t <= CRASH_LOOP_WINDOW_S)


def crash_looping(exits: Iterable[float], now: float) -> bool:
    return exits_in_window(exits, now) >= CRASH_LOOP_EXITS


def stop_timeout(role: str) -> float:
    """How long a process has between SIGTERM and SIGKILL: Redis flushes its AOF, a query
    frontend drains (answers what it accepted: up to its 30 s ``--drain-timeout``)."""
    return {REDIS: 30.0, QUERY: 40.0}.get(role, 10.0)


def exit_reason(returncode: int | None, *, memory_limit: int = 0, oom_killed: bool = False) -> str:
    """Why a process ended, in words: ``exit code 1``, ``killed by SIGKILL``,
    ``memory limit (268435456 bytes) reached: ...``. ``returncode`` is ``None`` when
    the supervisor did not start the process (it adopted it) and cannot know."""
    if returncode is None:
        base = "exited (adopted process: exit status unknown)"
    elif returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        base = f"killed by {name}"
    elif returncode == EXIT_RESTART_REQUESTED:
        base = f"exit code {returncode}: a query frontend asked for a restart"
    else:
        base = f"exit code {returncode}"
    if oom_killed or (memory_limit and returncode == EXIT_MEMORY_LIMIT):
        return f"memory limit ({memory_limit} bytes) reached: {base}"
    return base


def is_memory_limit(reason: str) -> bool:
    return reason.startswith("memory limit")


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """One process the supervisor should keep running."""

    name: str
    role: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log_path: str
    labels: dict[str, str] = field(default_factory=dict)  # model, version, replica_id, ...
    memory_limit: int = 0  # bytes; 0: none
    generation: int = 0  # bumped to ask for a restart (rolling restart, retry of a failed one)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProgramSpec:
        return cls(
            name=str(doc["name"]),
            role=str(doc["role"]),
            argv=[str(a) for a in doc["argv"]],
            env={str(k): str(v) for k, v in dict(doc.get("env", {})).items()},
            cwd=str(doc["cwd"]),
            log_path=str(doc["log_path"]),
            labels={str(k): str(v) for k, v in dict(doc.get("labels", {})).items()},
            memory_limit=int(doc.get("memory_limit", 0)),
            generation=int(doc.get("generation", 0)),
        )

    @property
    def revision(self) -> str:
        text = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class ProgramState:
    """What the supervisor reports of one program."""

    name: str
    role: str
    state: str  # running, backoff, failed, stopping
    pid: int = 0
    create_time: float = 0.0
    restarts: int = 0  # restarts after an unintended exit
    reason: str = ""  # why it last exited (or failed)
    since: float = 0.0  # wall-clock time of the last state change
    revision: str = ""  # of the spec this state is for
    memory_limit: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    log_tail: str = ""  # the end of its log when it last exited (state file only)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def public_json(self) -> dict[str, Any]:
        """The Redis hash's value: no log lines (a model's output is for the operator)."""
        doc = self.to_json()
        doc.pop("log_tail", None)
        doc.pop("revision", None)
        doc.pop("create_time", None)
        doc["memory_limit_bytes"] = doc.pop("memory_limit")
        return doc

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProgramState:
        return cls(
            name=str(doc["name"]),
            role=str(doc.get("role", "")),
            state=str(doc["state"]),
            pid=int(doc.get("pid", 0)),
            create_time=float(doc.get("create_time", 0.0)),
            restarts=int(doc.get("restarts", 0)),
            reason=str(doc.get("reason", "")),
            since=float(doc.get("since", 0.0)),
            revision=str(doc.get("revision", "")),
            memory_limit=int(doc.get("memory_limit", 0)),
            labels={str(k): str(v) for k, v in dict(doc.get("labels", {})).items()},
            log_tail=str(doc.get("log_tail", "")),
        )


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    tmp.replace(path)


class SupervisorFiles:
    """The supervisor's directory under a data dir: specs in, state out."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir / "supervisor"
        self.programs = self.root / "programs"
        self.state_file = self.root / "state.json"
        self.lock_file = self.root / "lock"

    def write_spec(self, spec: ProgramSpec) -> None:
        with os_errors(f"write the program spec of {spec.name} in {self.programs}"):
            self.programs.mkdir(mode=0o700, parents=True, exist_ok=True)
            # The environment is inherited: private to this user, like the secrets dir.
            _write_atomic(self.programs / f"{spec.name}.json", json.dumps(spec.to_json()) + "\n")

    def remove_spec(self, name: str) -> None:
        with os_errors(f"remove the program spec of {name} from {self.programs}"):
            (self.programs / f"{name}.json").unlink(missing_ok=True)

    def remove_all_specs(self) -> None:
        for spec in self.load_specs():
            self.remove_spec(spec.name)

    def load_specs(self) -> list[ProgramSpec]:
        if not self.programs.is_dir():
            return []
        specs = []
        for file in sorted(self.programs.glob("*.json")):
            try:
                specs.append(ProgramSpec.from_json(json.loads(file.read_text(encoding="utf-8"))))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a damaged spec runs nothing; the manager rewrites it
        return specs

    def write_state(self, doc: Mapping[str, Any]) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_atomic(self.state_file, json.dumps(doc, indent=1) + "\n")

    def read_state(self) -> dict[str, Any]:
        """``{"supervisor": {"pid": ..}, "programs": {name: ProgramState}}`` or empty."""
        try:
            doc = json.loads(self.state_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    def program_states(self) -> dict[str, ProgramState]:
        programs = self.read_state().get("programs", {})
        states = {}
        if isinstance(programs, dict):
            for name, doc in programs.items():
                try:
                    states[str(name)] = ProgramState.from_json(doc)
                except (KeyError, TypeError, ValueError):
                    continue
        return states
