"""The ``schooner`` command's parsing, exit codes and messages, with no cluster running."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin.cli import build_parser, main


def test_every_documented_command_parses(tmp_path: Path) -> None:
    parser = build_parser()
    for argv in (
        ["start", "--data-dir", str(tmp_path), "--query-port", "2000", "--redis-port", "2001"],
        ["stop", "--data-dir", str(tmp_path)],
        ["status", "--json"],
        ["apps"],
        ["models", "--json"],
        ["replicas"],
        ["logs", "query", "-n", "5"],
        ["scale", "m", "2", "--version", "1"],
        ["set-version", "m", "1"],
    ):
        assert parser.parse_args(argv).command == argv[0]


def test_start_port_flags_reach_the_arguments(tmp_path: Path) -> None:
    args = build_parser().parse_args(["start", "--data-dir", str(tmp_path), "--rpc-port", "7100"])
    assert (args.query_port, args.management_port, args.rpc_port) == (1337, 1338, 7100)
    assert args.data_dir == tmp_path


def test_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2


def test_stop_when_nothing_runs_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["stop", "--data-dir", str(tmp_path / "d")]) == 0
    assert "stopped" in capsys.readouterr().out


def test_status_when_not_running_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--data-dir", str(tmp_path)]) == 1
    assert "not running" in capsys.readouterr().out


def test_listing_when_not_running_says_how_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["apps", "--data-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "schooner start" in err


def test_logs_lists_and_tails(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "query.log").write_text("one\ntwo\nthree\n")
    assert main(["logs", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "query\n"
    assert main(["logs", "query", "-n", "2", "--data-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out == "two\nthree\n"
    assert main(["logs", "nope", "--data-dir", str(tmp_path)]) == 1
    assert "known: query" in capsys.readouterr().err
    assert main(["logs", "--out", str(tmp_path / "copy"), "--data-dir", str(tmp_path)]) == 0
    assert (tmp_path / "copy" / "query.log").read_text() == "one\ntwo\nthree\n"
