"""``schooner top`` with no cluster: its frames drawn from answers of the contract's shape
(``docs/admin-api.md``, ``GET /admin/overview`` and ``/admin/apps/{app}/activity``), the
command's modes and exit statuses over a fake connection, and the client methods
``Connection.get_overview`` / ``get_app_activity`` against a fake management API."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from admin import (
    Connection,
    InvalidRequestError,
    LocalContainerManager,
    NotFoundError,
    ServiceUnavailableError,
)
from admin.cli import _managers, _top, build_parser, main
from admin.cli._parser import usage_problem
from admin.cli._top_view import BLOCKS, Frame, duration, percent, render, size, sparkline

NOW = 1_780_000_000.0
T = [NOW - 300 + 2 * i for i in range(150)]
NONE_150: list[float | None] = [None] * 150


def overview() -> dict[str, Any]:
    """An overview as the contract draws it: one busy app, one idle, two models."""
    return {
        "now": NOW,
        "interval_s": 2.0,
        "window_s": 300,
        "frontends": [{"id": "host-101-ab12", "last_seen_s": 0.8, "uptime_s": 3723.0}],
        "apps": [
            {
                "name": "sums",
                "input_type": "doubles",
                "slo_micros": 100000,
                "policy": "exp3",
                "linked_models": ["summer", "summer:1"],
                "now": {
                    "rps": 41.5,
                    "p50_ms": 1.5,
                    "p99_ms": 140.0,
                    "default_rate": 0.02,
                    "error_rate": 0.0,
                },
                "series": {
                    "t": T,
                    "rps": [None] * 100 + [float(i) for i in range(50)],
                    "p50_ms": NONE_150,
                    "p99_ms": NONE_150,
                    "default_rate": NONE_150,
                },
            },
            {
                "name": "[bold]idle",
                "input_type": "strings",
                "slo_micros": 2500,
                "policy": "single",
                "linked_models": [],
                "now": {
                    "rps": 0.0,
                    "p50_ms": None,
                    "p99_ms": None,
                    "default_rate": None,
                    "error_rate": None,
                },
                "series": {
                    "t": T,
                    "rps": NONE_150,
                    "p50_ms": NONE_150,
                    "p99_ms": NONE_150,
                    "default_rate": NONE_150,
                },
            },
        ],
        "models": [
            {
                "name": "summer",
                "current_version": "2",
                "versions": ["1", "2"],
                "replicas_desired": {"1": 1, "2": 2},
                "replicas": [
                    replica("summer-2-a", "2", True, True, "ok", 1),
                    replica("summer-2-b", "2", True, False, "stuck", 2),
                    replica("summer-1-a", "1", False, False, "silent", 0),
                ],
                "now": {"batch_size": 3.4, "queue_depth": 2, "qps": 39.0},
                "series": {"t": T, "batch_size": NONE_150, "queue_depth": [0] * 150, "qps": T},
            },
            {
                "name": "fresh",
                "current_version": None,
                "versions": [],
                "replicas_desired": {},
                "replicas": [],
                "now": {"batch_size": None, "queue_depth": 0, "qps": 0.0},
                "series": {"t": [], "batch_size": [], "queue_depth": [], "qps": []},
            },
        ],
        "cache": {
            "now": {"hit_rate": 0.25, "bytes": 3 * 1024 * 1024},
            "series": {"t": T, "hit_rate": [0.25] * 150},
        },
    }


def replica(
    rid: str, version: str, connected: bool, rotating: bool, state: str, restarts: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "version": version,
        "connected": connected,
        "in_rotation": rotating,
        "state": state,
        "restarts": restarts,
    }


def activity(defaults: int = 12) -> dict[str, Any]:
    return {
        "app": "sums",
        "policy": "exp3",
        "policy_params": {"eta": 0.1, "gamma": 0.05},
        "linked_models": ["summer", "summer:1"],
        "weights": {
            "t": T[:3],
            "arms": {"summer:2": [0.5, 0.6, 0.7], "summer:1": [0.5, 0.4, None]},
        },
        "recent_defaults": [
            {
                "t": NOW - i,
                "query_id": 100 - i,
                "request_id": None if i % 2 else f"req-{i}",
                "reason": f"no replica answered within the SLO ({i})",
                "frontend": "host-101-ab12",
            }
            for i in range(defaults)
        ],
    }


def draw(frame: Frame, width: int = 200) -> str:
    console = Console(file=io.StringIO(), width=width, markup=False, highlight=False)
    console.print(render(frame, width))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


def row(out: str, first: str) -> list[str]:
    """The cells of the table row that starts with ``first``, split on runs of spaces."""
    for line in out.splitlines():
        if line.split(maxsplit=1)[:1] == [first]:
            return line.split()
    raise AssertionError(f"no row {first!r} in:\n{out}")


# --------------------------------------------------------------------------- frames


def test_a_frame_shows_every_app_model_cache_and_frontend() -> None:
    out = draw(Frame(overview(), where="data dir /x"))
    assert out.splitlines()[0].startswith("schooner top · data dir /x · window 300s")
    sums = row(out, "sums")
    assert sums[1] == "41.5"  # req/s
    assert sums[-7:] == ["1.5", "140.0", "2.0%", "0.0%", "100", "exp3", "summer,summer:1"]
    assert row(out, "[bold]idle")[1:] == ["0.0", "-", "-", "-", "-", "-", "2.5", "single", "-"]
    summer = row(out, "summer")
    # current, versions, connected/in rotation/desired, health, restarts, batch, queue, qps
    assert summer[1:5] == ["2", "1,2", "2/1/3", "1"]
    assert "1 ok, 1 silent, 1 stuck" in out
    assert summer[10:14] == ["3", "3.4", "2", "39.0"]
    assert row(out, "fresh")[1:] == ["-", "-", "0/0/0", "-", "0", "-", "0", "0.0", "-"]
    assert row(out, "25.0%")[:3] == ["25.0%", "3.0", "MiB"]
    assert row(out, "host-101-ab12")[1:] == ["0.8s", "ago", "1h02m"]


def test_no_cell_is_a_literal_none_and_names_are_not_markup() -> None:
    frame = Frame(overview(), activity(), where="w")
    out = draw(frame)
    assert "None" not in out
    assert "[bold]idle" in out


def test_a_frame_of_an_empty_or_partial_answer_draws_dashes() -> None:
    out = draw(Frame({"now": NOW, "apps": [], "models": [], "frontends": []}))
    assert "apps: none registered" in out and "models: none deployed" in out
    assert "query frontends: none reported" in out
    assert row(out, "-")[:2] == ["-", "-"]  # the cache's hit rate and bytes
    broken = {"apps": [{"name": "a", "now": None, "series": {"rps": "x"}}], "models": [{}]}
    out = draw(Frame(broken))
    assert "None" not in out
    assert row(out, "a")[1:] == ["-"] * 7 + ["-", "-"]


def test_the_app_activity_shows_weights_and_the_newest_defaults() -> None:
    out = draw(Frame(overview(), activity(), where="w"))
    assert "app sums: policy exp3 (eta=0.1, gamma=0.05), linked to summer, summer:1" in out
    assert row(out, "summer:2")[1] == "0.700"
    assert row(out, "summer:1")[1] == "0.400"  # its last known weight
    assert "recent defaults (newest 10 of 12)" in out
    assert "no replica answered within the SLO (0)" in out
    assert "no replica answered within the SLO (9)" in out
    assert "(10)" not in out
    assert "req-0" in out
    split = {"weights": {"summer:1": 90, "summer:2": 10}, "seed": None, "loss": "auto"}
    out = draw(Frame(overview(), {**activity(0), "policy": "split", "policy_params": split}))
    assert 'policy split (weights={"summer:1":90,"summer:2":10}, seed=null, loss=auto)' in out
    out = draw(Frame(overview(), {**activity(0), "weights": {"t": [], "arms": {}}}))
    assert "weights: none in the window" in out
    assert "recent defaults: none in the window" in out


@pytest.mark.parametrize("width", [80, 120])
def test_on_a_narrow_terminal_the_trends_go_and_no_number_is_cut(width: int) -> None:
    frame = Frame(overview(), activity(), where="w")
    out = draw(frame, width=width)
    assert all(len(line) <= width for line in out.splitlines())
    assert ("trend" in out) == (width >= 110)
    sums = row(out, "sums")
    assert [sums[1], *sums[-7:-1]] == ["41.5", "1.5", "140.0", "2.0%", "0.0%", "100", "exp3"]
    summer = row(out, "summer")
    assert summer[1:4] == ["2", "1,2", "2/1/3"]
    assert {"3.4", "2", "39.0"} <= set(summer)
    assert "…" not in " ".join(summer + row(out, "fresh"))


def test_an_error_is_a_reconnecting_banner_over_the_last_frame() -> None:
    out = draw(Frame(overview(), error="cannot reach the management frontend"))
    assert "reconnecting: cannot reach the management frontend" in out
    assert row(out, "sums")[1] == "41.5"


def test_sizes_durations_and_rates_read_as_a_person_would_say_them() -> None:
    assert [size(n) for n in (0, 1023, 1536, 5 * 2**30, 2**50, None, "x")] == [
        "0 B",
        "1023 B",
        "1.5 KiB",
        "5.0 GiB",
        "1048576.0 GiB",
        "-",
        "-",
    ]
    assert [duration(s) for s in (0.4, 59, 61, 3600, 7620, None)] == [
        "0s",
        "59s",
        "1m01s",
        "1h00m",
        "2h07m",
        "-",
    ]
    assert [percent(r) for r in (0, 0.123, 1, None, True)] == ["0.0%", "12.3%", "100.0%", "-", "-"]


def test_sparklines_scale_to_the_largest_and_leave_gaps_blank() -> None:
    assert sparkline([0.0, 1.0, 2.0, None, 4.0, 8.0]) == "▁▂▃ ▅█"
    assert sparkline([None, None]) == "-"
    assert sparkline([]) == "-"
    assert sparkline([0, 0]) == "▁▁"
    assert sparkline([float(i) for i in range(160)], width=8) == "▁▂▃▄▅▆▇█"


@given(st.lists(st.none() | st.floats(min_value=0, max_value=1e9), max_size=400))
def test_a_sparkline_is_never_wider_than_asked_and_only_blocks(values: list[float | None]) -> None:
    line = sparkline(values, width=24)
    assert line == "-" or (len(line) <= 24 and set(line) <= set(BLOCKS + " "))
    assert (line == "-") == all(v is None for v in values)


# --------------------------------------------------------------------------- the command


class FakeTelemetry:
    """What ``schooner top`` calls on a Connection, recorded. ``down`` makes every call
    fail as an unreachable cluster does, until a test sets it back."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.down = False
        self.cm = LocalContainerManager(data_dir=Path("/nonexistent"))

    def __enter__(self) -> FakeTelemetry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.calls.append("exit")

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.down:
            raise ServiceUnavailableError("cannot reach the management frontend: is it\nrunning?")

    def connect(self) -> None:
        self._call("connect")

    def close(self) -> None:
        self.calls.append("close")

    def get_overview(self, window_s: int) -> dict[str, Any]:
        self._call(f"get_overview {window_s}")
        return overview()

    def get_app_activity(self, app: str, window_s: int) -> dict[str, Any]:
        self._call(f"get_app_activity {app} {window_s}")
        if app != "sums":
            raise NotFoundError(f"no app {app!r}", status_code=404)
        return activity()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelemetry]:
    conn = FakeTelemetry()
    monkeypatch.setattr(_managers, "manager", lambda args: conn.cm)
    monkeypatch.setattr(_managers, "connection", lambda args, cm: conn)
    yield conn


def test_once_prints_one_frame_and_exits_0(
    fake: FakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["top", "--once", "--window", "60"]) == 0
    out = capsys.readouterr().out
    assert row(out, "sums")[1] == "41.5"
    assert fake.calls == ["connect", "get_overview 60", "exit"]


def test_without_a_terminal_top_prints_one_frame_even_without_once(
    fake: FakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["top", "--app", "sums"]) == 0  # stdout is captured: not a terminal
    out = capsys.readouterr().out
    assert "recent defaults (newest 10 of 12)" in out
    assert fake.calls == ["connect", "get_overview 300", "get_app_activity sums 300", "exit"]


def test_an_unknown_app_or_an_unreachable_api_is_one_line_and_status_1(
    fake: FakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["top", "--once", "--app", "nope"]) == 1
    err = capsys.readouterr().err
    assert err == "error: no app 'nope'\n"
    fake.down = True
    assert main(["top", "--once"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == "error: cannot reach the management frontend: is it\nrunning?\n"


def test_top_takes_every_managers_options() -> None:
    for argv in (
        ["top", "--manager", "docker", "--cluster", "prod", "--once"],
        ["--manager", "kubernetes", "top", "--namespace", "ml", "--app", "a", "--interval", "5"],
        ["top", "--data-dir", "/tmp/x", "--window", "3600"],
    ):
        args = build_parser().parse_args(argv)
        assert args.command == "top" and usage_problem(args) is None
    args = build_parser().parse_args(["top", "--manager", "docker", "--data-dir", "/x"])
    assert usage_problem(args) == "--data-dir does not apply to --manager docker (only to local)"


@pytest.mark.parametrize(
    "argv",
    [
        ["top", "--interval", "0"],
        ["top", "--interval", "soon"],
        ["top", "--window", "5"],
        ["top", "--window", "3601"],
    ],
)
def test_bad_intervals_and_windows_are_usage_errors(
    argv: list[str], fake: FakeTelemetry, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[1]}: '{argv[2]}' is not a" in err
    assert fake.calls == []


class Terminal:
    """A console that says it is a terminal, and a clock whose sleeps run ``steps`` (one
    a sleep) and press Ctrl-C after the last."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *steps: Callable[[], None]) -> None:
        self.screen = io.StringIO()
        console = Console(file=self.screen, force_terminal=True, width=200, markup=False)
        monkeypatch.setattr(_top, "make_console", lambda: console)
        monkeypatch.setattr("admin.cli._top.time.sleep", self.sleep)
        self.steps = list(steps)
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        if not self.steps:
            raise KeyboardInterrupt
        self.steps.pop(0)()


def test_live_redraws_shows_reconnecting_and_ctrl_c_exits_0(
    fake: FakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down() -> None:
        fake.down = True

    def up() -> None:
        fake.down = False

    term = Terminal(monkeypatch, lambda: None, down, up)
    assert main(["top", "--interval", "0.5"]) == 0
    drawn = term.screen.getvalue()
    assert "reconnecting: cannot reach the management frontend: is it running?" in drawn
    assert fake.calls == [
        *("connect", "get_overview 300"),  # the first frame
        "get_overview 300",  # refresh 1
        "get_overview 300",  # refresh 2: fails
        *("close", "connect", "get_overview 300"),  # refresh 3: attaches again
        "exit",
    ]
    assert len(term.slept) == 4 and all(0 <= s <= 0.5 for s in term.slept)
    last = drawn.rsplit("schooner top", 1)[1]
    assert "reconnecting" not in last and "sums" in last


def test_live_waits_under_the_banner_for_a_cluster_that_is_not_up_yet(
    fake: FakeTelemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.down = True

    def up() -> None:
        fake.down = False

    term = Terminal(monkeypatch, lambda: None, up)
    assert main(["top", "--app", "sums"]) == 0
    drawn = term.screen.getvalue()
    first, _, last = drawn.partition("reconnecting: cannot reach")
    assert "apps" not in first and "app" in last
    assert fake.calls == [
        "connect",  # fails: the banner alone
        *("close", "connect"),  # still down
        *("close", "connect", "get_overview 300", "get_app_activity sums 300"),
        "exit",
    ]


def test_live_ends_at_once_on_an_error_that_waiting_does_not_mend(
    fake: FakeTelemetry, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    term = Terminal(monkeypatch)
    assert main(["top", "--app", "nope"]) == 1
    assert capsys.readouterr().err == "error: no app 'nope'\n"
    assert term.slept == [] and term.screen.getvalue() == ""


# --------------------------------------------------------------------------- the client


def api_connection(
    handler: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Connection, list[str]]:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url.raw_path.decode()}")
        assert request.headers["authorization"] == "Bearer fake-token"
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"ok": True})
        answer: httpx.Response = handler(request)
        return answer

    cm = LocalContainerManager(data_dir=tmp_path)
    monkeypatch.setattr(cm, "connect", lambda: None)
    monkeypatch.setattr(cm, "admin_token", lambda: "fake-token")
    conn = Connection(cm, transport=httpx.MockTransport(handle))
    conn.connect()
    seen.clear()
    return conn, seen


def test_get_overview_and_activity_send_the_window_and_return_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/activity"):
            return httpx.Response(200, json=activity())
        return httpx.Response(200, json=overview())

    conn, seen = api_connection(handler, tmp_path, monkeypatch)
    with conn:
        assert conn.get_overview() == json.loads(json.dumps(overview()))
        assert conn.get_overview(window_s=60)["window_s"] == 300
        assert conn.get_app_activity("sums", 3600)["policy"] == "exp3"
    assert seen == [
        "GET /admin/overview?window=300",
        "GET /admin/overview?window=60",
        "GET /admin/apps/sums/activity?window=3600",
    ]


@pytest.mark.parametrize("window", [9, 3601, 30.0, True, "300"])
def test_a_window_out_of_range_is_refused_before_any_request(
    window: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, seen = api_connection(lambda r: httpx.Response(500), tmp_path, monkeypatch)
    with conn:
        with pytest.raises(InvalidRequestError, match="window_s must be a whole number"):
            conn.get_overview(window)
        with pytest.raises(InvalidRequestError, match="window_s must be a whole number"):
            conn.get_app_activity("sums", window)
        with pytest.raises(InvalidRequestError):
            conn.get_app_activity("Not/An/App")
    assert seen == []


def test_errors_map_as_every_other_call_and_a_missing_endpoint_says_upgrade(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/activity"):
            body = {"error": "not_found", "message": "app 'gone' not found"}
            return httpx.Response(404, json=body)
        body = {"error": "not_found", "message": "no such endpoint: GET /admin/overview"}
        return httpx.Response(404, json=body)

    conn, _ = api_connection(handler, tmp_path, monkeypatch)
    with conn:
        with pytest.raises(NotFoundError, match="predates the telemetry endpoints; upgrade"):
            conn.get_overview()
        with pytest.raises(NotFoundError, match="app 'gone' not found") as info:
            conn.get_app_activity("gone")
        assert "upgrade" not in str(info.value)

    def unavailable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    conn, _ = api_connection(unavailable, tmp_path, monkeypatch)
    with conn, pytest.raises(ServiceUnavailableError, match="cannot reach the management"):
        conn.get_overview()


def test_no_control_character_of_an_answer_reaches_the_terminal() -> None:
    # Strings in the answers come from the frontends' ticks and replicas' reports; rich
    # drops only a few control codes, so an ESC in a reason or a replica state would
    # reach the operator's terminal (retitle it, clear it, forge lines).
    evil = "x\x1b]0;PWNED\x07\x1b[2J\x9b31m\ry"
    act = activity(1)
    act["recent_defaults"][0] = {**act["recent_defaults"][0], "reason": evil, "frontend": evil}
    act["weights"] = {"t": [NOW], "arms": {evil: [0.5]}}
    ov = overview()
    ov["frontends"] = [{"id": evil, "last_seen_s": 1.0, "uptime_s": 5.0}]
    ov["models"][0]["replicas"][0]["state"] = evil
    console = Console(file=io.StringIO(), width=300, force_terminal=True, color_system=None)
    console.print(render(Frame(ov, act, where="w", error=evil), 300))
    out = console.file.getvalue()  # type: ignore[attr-defined]
    for code in ("\x1b]", "\x1b[2J", "\x9b", "\x07", "\r"):
        assert code not in out, repr(code)
    assert "PWNED" in out  # shown, harmlessly
