"""The local supervisor's restart policy and its words for an exit (pure functions)."""

from __future__ import annotations

import signal
from pathlib import Path

from admin.container_managers._supervision import (
    BACKOFF_CAP_S,
    BACKOFF_FIRST_S,
    CRASH_LOOP_EXITS,
    CRASH_LOOP_WINDOW_S,
    EXIT_MEMORY_LIMIT,
    ProgramSpec,
    ProgramState,
    SupervisorFiles,
    backoff_delay,
    crash_looping,
    exit_reason,
    is_memory_limit,
)


def test_the_first_restart_is_quick_and_each_next_one_waits_twice_as_long_up_to_a_cap() -> None:
    delays = [backoff_delay(n) for n in range(1, 12)]
    assert delays[0] == BACKOFF_FIRST_S <= 0.25
    assert delays[1] == 2 * delays[0] and delays[2] == 4 * delays[0]
    assert max(delays) == BACKOFF_CAP_S and delays[-1] == BACKOFF_CAP_S
    assert delays == sorted(delays)
    assert backoff_delay(10_000) == BACKOFF_CAP_S  # no overflow however long it loops


def test_a_crash_loop_is_enough_exits_within_the_window() -> None:
    now = 1000.0
    quick = [now - i for i in range(CRASH_LOOP_EXITS)]
    assert crash_looping(quick, now)
    assert not crash_looping(quick[:-1], now)
    # The same number of exits, spread out: each restart stayed up a while.
    spread = [now - i * CRASH_LOOP_WINDOW_S for i in range(CRASH_LOOP_EXITS)]
    assert not crash_looping(spread, now)


def test_an_exit_is_described_by_its_code_or_signal() -> None:
    assert exit_reason(1) == "exit code 1"
    assert exit_reason(-signal.SIGKILL) == "killed by SIGKILL"
    assert exit_reason(None).startswith("exited (adopted")
    assert "a query frontend asked for a restart" in exit_reason(75)


def test_hitting_the_memory_limit_is_named_as_such() -> None:
    limited = exit_reason(EXIT_MEMORY_LIMIT, memory_limit=1 << 30)
    assert limited == f"memory limit ({1 << 30} bytes) reached: exit code 76"
    assert is_memory_limit(limited)
    oom = exit_reason(-signal.SIGKILL, memory_limit=1 << 30, oom_killed=True)
    assert is_memory_limit(oom) and "SIGKILL" in oom
    # Without a limit, exit code 76 is just an exit code.
    assert not is_memory_limit(exit_reason(EXIT_MEMORY_LIMIT))


def spec(**changes: object) -> ProgramSpec:
    doc: dict[str, object] = {
        "name": "query",
        "role": "query",
        "argv": ["python", "-m", "query_frontend"],
        "env": {"PATH": "/usr/bin"},
        "cwd": "/data",
        "log_path": "/data/logs/query.log",
    }
    doc.update(changes)
    return ProgramSpec.from_json(doc)


def test_a_spec_revision_changes_with_what_runs_and_with_a_restart_request() -> None:
    base = spec()
    assert spec().revision == base.revision
    assert spec(argv=["python", "-m", "other"]).revision != base.revision
    assert spec(memory_limit=1 << 20).revision != base.revision
    assert spec(generation=1).revision != base.revision
    assert ProgramSpec.from_json(base.to_json()) == base


def test_specs_and_states_round_trip_through_their_files(tmp_path: Path) -> None:
    files = SupervisorFiles(tmp_path)
    files.write_spec(spec())
    assert files.load_specs() == [spec()]
    assert (files.programs / "query.json").stat().st_mode & 0o077 == 0  # env: private
    (files.programs / "broken.json").write_text("{not json")
    assert files.load_specs() == [spec()]  # a damaged spec runs nothing
    state = ProgramState("query", "query", "failed", pid=7, restarts=5, reason="crash loop")
    files.write_state({"programs": {"query": state.to_json()}})
    assert files.program_states() == {"query": state}
    public = state.public_json()
    assert "log_tail" not in public and public["memory_limit_bytes"] == 0
    files.remove_all_specs()
    assert files.load_specs() == []
