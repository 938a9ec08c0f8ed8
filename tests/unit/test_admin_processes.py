"""Detached processes and their pid records: a record only ever matches its own process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from admin._progress import wait_for
from admin.container_managers._processes import (
    ProcessRecord,
    RunDir,
    find,
    is_alive,
    launch,
    log_tail,
    terminate,
)


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


def record_for(pid: int, create_time: float, name: str = "replica-m-1-r0") -> ProcessRecord:
    return ProcessRecord(
        name=name, role="replica", pid=pid, create_time=create_time, argv=[], log_path=""
    )


def test_record_whose_create_time_differs_is_not_signalled(
    sleeper: subprocess.Popen[bytes],
) -> None:
    real = psutil.Process(sleeper.pid).create_time()
    stranger = record_for(sleeper.pid, real + 1.0)  # same pid, another process's record
    assert find(stranger) is None
    assert not is_alive(stranger)
    assert terminate([stranger], timeout=1.0) == []
    # Give a wrongly sent signal time to act before looking, but no longer than it takes.
    with contextlib.suppress(subprocess.TimeoutExpired):
        sleeper.wait(timeout=0.2)
    assert sleeper.poll() is None, "a process the record does not describe was killed"


def test_matching_record_is_terminated(sleeper: subprocess.Popen[bytes]) -> None:
    record = record_for(sleeper.pid, psutil.Process(sleeper.pid).create_time())
    assert is_alive(record)
    assert terminate([record], timeout=10.0) == []
    assert sleeper.wait(timeout=10) == -15  # SIGTERM, not SIGKILL


def test_process_ignoring_sigterm_is_killed_after_the_deadline() -> None:
    code = (
        "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
        record = record_for(proc.pid, psutil.Process(proc.pid).create_time())
        assert terminate([record], timeout=0.3) == []
        assert proc.wait(timeout=10) == -9
    finally:
        proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()


def test_record_of_an_exited_process_matches_nothing() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    create_time = psutil.Process(proc.pid).create_time()
    proc.wait(timeout=10)
    record = record_for(proc.pid, create_time)
    assert find(record) is None
    assert terminate([record]) == []


def test_launched_process_is_detached_and_logs_to_its_file(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "child.log"
    code = "import os, time; print('hello from', os.getsid(0), flush=True); time.sleep(60)"
    pid, create_time = launch(
        [sys.executable, "-c", code], log_path=log, env=dict(os.environ), cwd=tmp_path
    )
    record = record_for(pid, create_time, name="child")
    try:
        assert is_alive(record)
        proc = psutil.Process(pid)
        assert proc.ppid() != os.getpid(), "not detached: still a child of this process"
        assert wait_for(lambda: "hello from" in log.read_text(), timeout=10.0)
        assert f"hello from {os.getsid(0)}" not in log.read_text()  # its own session
        assert "schooner started" in log.read_text()
        assert os.path.realpath(proc.cwd()) == os.path.realpath(tmp_path)
    finally:
        assert terminate([record]) == []
    assert wait_for(lambda: not is_alive(record), timeout=10.0)


def test_launch_of_a_quick_exit_gives_a_record_that_matches_nothing(tmp_path: Path) -> None:
    pid, create_time = launch(
        [sys.executable, "-c", "print('bye')"],
        log_path=tmp_path / "quick.log",
        env=dict(os.environ),
        cwd=tmp_path,
    )
    record = record_for(pid, create_time, name="quick")
    assert wait_for(lambda: not is_alive(record), timeout=10.0)
    assert wait_for(lambda: "bye" in log_tail(tmp_path / "quick.log"), timeout=10.0)


def test_run_dir_round_trip_and_unreadable_records(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    assert run.load_all() == []
    a = record_for(100, 1.5, name="a")
    b = ProcessRecord("b", "replica", 200, 2.5, ["x", "y"], "/l", "m", "1", "m-1-r0")
    run.save(a)
    run.save(b)
    (tmp_path / "run" / "broken.json").write_text("{not json")
    assert run.load_all() == [a, b]
    assert run.load("b") == b
    run.remove(a)
    run.remove(a)  # idempotent
    assert run.load_all() == [b]


def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(log, 3) == "line 97\nline 98\nline 99"
    assert log_tail(tmp_path / "missing.log") == ""
