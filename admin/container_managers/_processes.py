"""Detached local processes, their pid records, and stopping them safely.

Every process the local manager starts is launched through a short-lived launcher
process, so it is a grandchild: it runs in its own session, is reparented to init and
outlives the Python (or notebook kernel) that started it, and no zombie or
``Popen`` object is left behind here. Its stdout and stderr go to a log file.

A process is recorded as (pid, create time) in ``run/<name>.json``. A pid alone is not
an identity: after a reboot or a long time, another program may hold the same pid. A
record only matches a live process whose create time is the recorded one, so
``stop_all`` never signals a stranger.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import psutil

from admin._files import os_errors
from admin._progress import wait_for
from admin.exceptions import ContainerManagerError

logger = logging.getLogger(__name__)

# psutil derives create times from clock ticks since boot; repeated reads agree far
# more closely than this, while a recycled pid is at least one full tick apart.
CREATE_TIME_TOLERANCE: Final = 0.005

# The launcher starts the real process in a new session and exits at once. It runs
# isolated (-I) so that the PYTHONPATH meant for the child cannot change what it imports.
_LAUNCHER: Final = """\
import json, subprocess, sys
spec = json.loads(sys.argv[1])
with open(spec["log"], "ab") as log:
    proc = subprocess.Popen(
        spec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        cwd=spec["cwd"], start_new_session=True,
    )
print(proc.pid)
"""


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A process the local manager started; stored as ``run/<name>.json``."""

    name: str  # unique in the cluster: "redis", "management", "query", "replica-<id>"
    role: str  # "redis", "management", "query" or "replica"
    pid: int
    create_time: float
    argv: list[str]
    log_path: str
    model: str = ""
    version: str = ""
    replica_id: str = ""
    metrics_addr: str = ""  # replicas: ``host:port`` of their GET /metrics

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ProcessRecord:
        return cls(
            name=str(doc["name"]),
            role=str(doc["role"]),
            pid=int(doc["pid"]),
            create_time=float(doc["create_time"]),
            argv=[str(a) for a in doc.get("argv", [])],
            log_path=str(doc.get("log_path", "")),
            model=str(doc.get("model", "")),
            version=str(doc.get("version", "")),
            replica_id=str(doc.get("replica_id", "")),
            metrics_addr=str(doc.get("metrics_addr", "")),
        )


def launch(
    argv: Sequence[str], *, log_path: Path, env: Mapping[str, str], cwd: Path
) -> tuple[int, float]:
    """Start ``argv`` detached, output appended to ``log_path``; its (pid, create time).

    The create time is 0.0 when the process has already exited, so that its record
    matches nothing.
    """
    with os_errors(f"write the log {log_path}"):
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n===== {stamp} schooner started: {' '.join(argv)}\n")
    spec = json.dumps({"argv": list(argv), "log": str(log_path), "cwd": str(cwd)})
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-W", "ignore", "-c", _LAUNCHER, spec],
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ContainerManagerError(f"cannot start {argv[0]}: {exc}") from exc
    if done.returncode != 0 or not done.stdout.strip().isdigit():
        raise ContainerManagerError(
            f"cannot start {' '.join(argv)}: {done.stderr.strip()[-2000:] or done.stdout}"
        )
    pid = int(done.stdout.strip())
    try:
        create_time = float(psutil.Process(pid).create_time())
    except psutil.Error:
        create_time = 0.0
    return pid, create_time


def find(record: ProcessRecord) -> Any | None:
    """The live ``psutil.Process`` of a record, or ``None`` if it has gone.

    ``None`` also when the pid now belongs to another process (create times differ),
    when the process is a zombie, or when it cannot be inspected.
    """
    try:
        proc = psutil.Process(record.pid)
        if abs(float(proc.create_time()) - record.create_time) > CREATE_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except (psutil.Error, ValueError):  # ValueError: a damaged record's pid (< 0)
        return None
    return proc


def is_alive(record: ProcessRecord) -> bool:
    return find(record) is not None


def _running(proc: Any) -> bool:
    try:
        return bool(proc.is_running()) and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _signal_group(proc: Any, sig: signal.Signals) -> None:
    """Signal the process and, as it leads its own session, what it started (a model's
    subprocesses must not outlive stop_all)."""
    with contextlib.suppress(psutil.Error, OSError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def terminate(records: Iterable[ProcessRecord], timeout: float = 10.0) -> list[ProcessRecord]:
    """SIGTERM the live processes of ``records``, wait, then SIGKILL what is left.

    Returns the records whose process could not be stopped (normally none). Records
    that match no live process are skipped: their pid is not ours any more.
    """
    procs = [(r, p) for r in records if (p := find(r)) is not None]
    for record, proc in procs:
        logger.debug("SIGTERM %s (pid %d)", record.name, record.pid)
        _signal_group(proc, signal.SIGTERM)
    if wait_for(lambda: not any(_running(p) for _, p in procs), timeout=timeout):
        return []
    for record, proc in procs:
        if _running(proc):
            logger.warning("%s (pid %d) ignored SIGTERM; sending SIGKILL", record.name, record.pid)
            _signal_group(proc, signal.SIGKILL)
    wait_for(lambda: not any(_running(p) for _, p in procs), timeout=5.0)
    return [r for r, p in procs if _running(p)]


class RunDir:
    """The directory of process records of one cluster."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _file(self, name: str) -> Path:
        return self.path / f"{name}.json"

    def save(self, record: ProcessRecord) -> None:
        with os_errors(f"record {record.name} (pid {record.pid}) in {self.path}"):
            self.path.mkdir(parents=True, exist_ok=True)
            tmp = self._file(record.name).with_suffix(".tmp")
            tmp.write_text(json.dumps(record.to_json(), indent=2) + "\n", encoding="utf-8")
            tmp.replace(self._file(record.name))

    def remove(self, record: ProcessRecord) -> None:
        self.remove_name(record.name)

    def remove_name(self, name: str) -> None:
        with os_errors(f"remove the record of {name} from {self.path}"):
            self._file(name).unlink(missing_ok=True)

    def load(self, name: str) -> ProcessRecord | None:
        return self._read(self._file(name))

    def load_all(self) -> list[ProcessRecord]:
        if not self.path.is_dir():
            return []
        records = (self._read(f) for f in sorted(self.path.glob("*.json")))
        return [r for r in records if r is not None]

    @staticmethod
    def _read(file: Path) -> ProcessRecord | None:
        try:
            return ProcessRecord.from_json(json.loads(file.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("ignoring unreadable process record %s: %s", file, exc)
            return None


def log_tail(path: str | os.PathLike[str], lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ("" if it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
