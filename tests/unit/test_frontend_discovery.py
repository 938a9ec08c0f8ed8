"""Several frontends per replica: the ``--frontend`` forms, DNS discovery with an injected
resolver (no real DNS), session-set reconciliation and round-robin turns."""

from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest

from model_container import cli
from model_container.discovery import (
    WARN_EVERY_S,
    AddressBook,
    FrontendTargets,
    endpoint,
    parse_frontends,
    reconcile,
    resolve_host,
)
from model_container.sessions import RoundRobin

# ------------------------------------------------------------------------ parsing


def test_one_address_is_a_static_target() -> None:
    assert parse_frontends("tcp://query-frontend:7000") == FrontendTargets(
        static=("tcp://query-frontend:7000",)
    )


def test_a_list_is_deduplicated_and_keeps_its_order() -> None:
    targets = parse_frontends("tcp://b:7000, tcp://a:7000,tcp://b:7000,tcp://[::1]:7000")
    assert targets.static == ("tcp://b:7000", "tcp://a:7000", "tcp://[::1]:7000")
    assert not targets.discovers


def test_dns_form_and_mixed_list() -> None:
    targets = parse_frontends("dns+tcp://Query-Frontend-RPC.default.svc:7000,tcp://10.0.0.9:7001")
    assert targets.dns == (("query-frontend-rpc.default.svc", 7000),)
    assert targets.static == ("tcp://10.0.0.9:7001",)
    assert targets.discovers
    assert "dns+tcp://query-frontend-rpc.default.svc:7000" in targets.describe()


def test_unix_form_beside_the_others() -> None:
    longest = "/" + "p" * 106  # 107 bytes: sun_path's 108 with the NUL
    targets = parse_frontends(
        f"unix:///run/s/q.sock,tcp://a:7000,unix://{longest},unix:///run/s/q.sock"
    )
    assert targets.static == ("unix:///run/s/q.sock", "tcp://a:7000", f"unix://{longest}")


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("", "empty entry"),
        ("tcp://a:7000,", "empty entry"),
        ("http://a:7000", "not of a known form"),
        ("tcp://a", "not of a known form"),
        ("dns+tcp://a", "not of a known form"),
        ("dns+tcp://under_score:7000", "not of a known form"),
        ("dns+tcp://a:70000", "port 70000 is not in 1..65535"),
        ("tcp://a:0", "port 0 is not in 1..65535"),
        ("unix://run/q.sock", "must be absolute"),
        ("unix://", "must be absolute"),
        ("unix:///" + "d" * 107, "at most 107 bytes"),
    ],
)
def test_invalid_forms_say_which_forms_exist(spec: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as info:
        parse_frontends(spec)
    if "known form" in says or "empty" in says:
        assert "dns+tcp://NAME:PORT" in str(info.value)


REQUIRED = ["--bundle", "b", "--name", "m", "--version", "1"]


def test_cli_accepts_every_form_and_the_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHOONER_DISCOVERY_INTERVAL_S", raising=False)
    args = cli.parse_args([*REQUIRED, "--frontend", "tcp://a:1,tcp://b:2"])
    assert args.discovery_interval_s == 5.0
    args = cli.parse_args(
        [*REQUIRED, "--frontend", "dns+tcp://fe:7000", "--discovery-interval-s", "0.5"]
    )
    assert args.discovery_interval_s == 0.5
    monkeypatch.setenv("SCHOONER_DISCOVERY_INTERVAL_S", "2")
    monkeypatch.setenv("SCHOONER_FRONTEND", "dns+tcp://fe:7000")
    assert cli.parse_args(REQUIRED).discovery_interval_s == 2.0


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--frontend", "dns://fe:7000"], "is not of a known form"),
        (["--frontend", "tcp://a:1", "--discovery-interval-s", "0"], "must be a positive"),
        (["--frontend", "tcp://a:1", "--discovery-interval-s", "nan"], "must be a positive"),
    ],
)
def test_cli_errors(argv: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.parse_args([*REQUIRED, *argv])
    assert info.value.code == 2
    assert says in capsys.readouterr().err


# ------------------------------------------------------------------------ resolution


def test_endpoints_bracket_ipv6() -> None:
    assert endpoint("10.1.2.3", 7000) == "tcp://10.1.2.3:7000"
    assert endpoint("fd00::5", 7000) == "tcp://[fd00::5]:7000"


def test_localhost_resolves_for_real() -> None:
    addresses = resolve_host("localhost", 33100)
    assert addresses
    assert len(addresses) == len(set(addresses))
    assert set(addresses) <= {"127.0.0.1", "::1"}


@dataclass
class FakeDns:
    """An injectable resolver: a mutable table, or an error to raise."""

    table: dict[str, list[str]] = field(default_factory=dict)
    error: OSError | None = None
    calls: int = 0

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        if host not in self.table:
            raise OSError(f"Name or service not known: {host}")
        return self.table[host]


def test_address_book_follows_the_name() -> None:
    dns = FakeDns({"fe": ["10.0.0.1"]})
    book = AddressBook(parse_frontends("dns+tcp://fe:7000,tcp://static:1"), dns)
    assert book.refresh(0.0) == {"tcp://10.0.0.1:7000", "tcp://static:1"}
    dns.table["fe"] = ["10.0.0.1", "10.0.0.2", "fd00::3", "10.0.0.2"]
    assert book.refresh(5.0) == {
        "tcp://10.0.0.1:7000",
        "tcp://10.0.0.2:7000",
        "tcp://[fd00::3]:7000",
        "tcp://static:1",
    }
    dns.table["fe"] = ["10.0.0.2"]
    assert book.refresh(10.0) == {"tcp://10.0.0.2:7000", "tcp://static:1"}


def test_failed_resolution_keeps_the_known_set_and_warns_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    dns = FakeDns({"fe": ["10.0.0.1", "10.0.0.2"]})
    book = AddressBook(parse_frontends("dns+tcp://fe:7000"), dns)
    known = book.refresh(0.0)
    dns.error = OSError("Temporary failure in name resolution")
    with caplog.at_level(logging.DEBUG, logger="model_container.discovery"):
        for step in range(10):
            assert book.refresh(1.0 + step) == known
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "keeping its 2 known frontend(s)" in warnings[0].getMessage()
        book.refresh(1.0 + WARN_EVERY_S)
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2
        dns.error = None
        dns.table["fe"] = ["10.0.0.3"]
        assert book.refresh(100.0) == {"tcp://10.0.0.3:7000"}
        assert any("resolves again" in r.getMessage() for r in caplog.records)


def test_no_address_at_all_counts_as_a_failure() -> None:
    dns = FakeDns({"fe": ["10.0.0.1"]})
    book = AddressBook(parse_frontends("dns+tcp://fe:7000"), dns)
    book.refresh(0.0)
    dns.table["fe"] = []
    assert book.refresh(1.0) == {"tcp://10.0.0.1:7000"}


def test_unresolvable_at_start_means_no_frontend_yet() -> None:
    book = AddressBook(parse_frontends("dns+tcp://nowhere:7000"), FakeDns())
    assert book.refresh(0.0) == frozenset()


def test_reconcile_opens_new_and_closes_vanished_endpoints() -> None:
    current = {"tcp://10.0.0.1:7000": object(), "tcp://10.0.0.2:7000": object()}
    to_open, to_close = reconcile(current, {"tcp://10.0.0.2:7000", "tcp://10.0.0.3:7000"})
    assert to_open == ["tcp://10.0.0.3:7000"]
    assert to_close == ["tcp://10.0.0.1:7000"]
    assert reconcile(current, set(current)) == ([], [])


# ------------------------------------------------------------------------ turns


@dataclass(eq=False)
class QueueOnly:
    """What ``RoundRobin`` reads of a session: its queue, and whether it is closed."""

    name: str
    pending: collections.deque[Any] = field(default_factory=collections.deque)
    closed: bool = False


def session(name: str, *batches: Any) -> Any:
    return QueueOnly(name, collections.deque(batches))


def drain(turns: RoundRobin) -> list[Any]:
    order = []
    while (turn := turns.next()) is not None:
        order.append(turn[1])
    return order


def test_round_robin_takes_turns_and_keeps_fifo_within_a_session() -> None:
    a, b, c = session("a", "a1", "a2", "a3"), session("b", "b1"), session("c", "c1", "c2")
    turns = RoundRobin()
    for s in (a, b, c, a):  # marking twice gives no extra turn
        turns.mark(s)
    assert drain(turns) == ["a1", "b1", "c1", "a2", "c2", "a3"]


def test_round_robin_skips_sessions_that_lost_their_batches() -> None:
    a, b = session("a", "a1", "a2"), session("b", "b1", "b2")
    turns = RoundRobin()
    turns.mark(a)
    turns.mark(b)
    assert turns.next() == (a, "a1")
    b.pending.clear()  # b reconnected: its batches were dropped
    a.closed = True  # a's address vanished
    assert turns.next() is None
    b.pending.append("b3")  # b's new connection queues again
    turns.mark(b)
    assert turns.next() == (b, "b3")


def test_a_newly_busy_session_joins_at_the_back() -> None:
    a, b = session("a", "a1", "a2", "a3"), session("b")
    turns = RoundRobin()
    turns.mark(a)
    assert turns.next() == (a, "a1")
    b.pending.extend(["b1", "b2"])
    turns.mark(b)
    assert drain(turns) == ["a2", "b1", "a3", "b2"]


def test_cli_joins_a_repeated_frontend() -> None:
    args = cli.parse_args([*REQUIRED, "--frontend", "tcp://a:1", "--frontend", "dns+tcp://b:2"])
    assert args.frontend == "tcp://a:1,dns+tcp://b:2"
    assert parse_frontends(args.frontend).dns == (("b", 2),)
