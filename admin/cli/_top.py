"""``schooner top``: a live terminal view of what the cluster is doing, the numbers of the
dashboard's overview (``Connection.get_overview``), refreshed every ``--interval`` seconds.

With ``--once``, or when stdout is not a terminal (a pipe, a file, a test), it prints one
frame and exits: 0, or 1 with the one-line error of a management API it cannot reach.
Live, a cluster that cannot be reached does not end it: the last frame (if any) stays on
screen under a "reconnecting" banner, and each refresh attaches again (reading the
cluster's address and admin token anew, so a restarted cluster or a rotated token is
picked up) until the API answers. Ctrl-C ends it with status 0. The drawing is
``_top_view``'s.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping
from typing import Any, Final

from rich.console import Console
from rich.live import Live

from admin._connection import Connection
from admin.cli import _managers as managers
from admin.cli._top_view import Frame, render
from admin.exceptions import (
    ClusterNotRunningError,
    RequestTimeoutError,
    SchoonerError,
    ServiceUnavailableError,
)

DEFAULT_INTERVAL_S: Final = 2.0
# A terminal-less console (a pipe) is this wide unless $COLUMNS says otherwise: wide
# enough that no table of a frame is cut.
PIPE_WIDTH: Final = 200
# What live mode waits through at its start, under the banner (a cluster still starting,
# or being restarted); any other error (an unknown --app, a refused token) ends it.
WAIT_THROUGH: Final = (ClusterNotRunningError, ServiceUnavailableError, RequestTimeoutError)


def cmd_top(args: argparse.Namespace) -> int:
    console = make_console()
    live = not args.once and console.is_terminal
    try:
        with managers.connection(args, managers.manager(args)) as conn:
            where = managers.where(args, conn.cm)
            try:
                conn.connect()
                first = fetch(conn, args, where)
            except WAIT_THROUGH as exc:
                if not live:
                    raise  # one line on stderr, status 1 (admin.cli.main)
                first = Frame(None, None, where, one_line(exc))
            if not live:
                console.print(render(first, console.width))
                return 0
            watch(console, conn, args, first)
    except KeyboardInterrupt:
        pass
    return 0


def make_console() -> Console:
    """Markup and highlighting off: every cell is drawn as the API wrote it."""
    console = Console(markup=False, highlight=False, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(markup=False, highlight=False, emoji=False, width=PIPE_WIDTH)
    return console


def fetch(conn: Connection, args: argparse.Namespace, where: str) -> Frame:
    """One frame: the overview, and the app's activity with ``--app``."""
    overview: Mapping[str, Any] = conn.get_overview(args.window)
    activity: Mapping[str, Any] | None = None
    if args.app is not None:
        activity = conn.get_app_activity(args.app, args.window)
    return Frame(overview, activity, where)


def watch(console: Console, conn: Connection, args: argparse.Namespace, first: Frame) -> None:
    """Redraw every ``--interval`` seconds until Ctrl-C; errors become the banner, and
    the next refresh attaches again."""
    frame = first
    broken = first.error is not None
    due = time.monotonic() + args.interval
    with Live(render(frame, console.width), console=console, auto_refresh=False) as live:
        while True:
            time.sleep(max(0.0, due - time.monotonic()))
            due = time.monotonic() + args.interval
            try:
                if broken:
                    conn.close()
                    conn.connect()
                frame = fetch(conn, args, frame.where)
                broken = False
            except SchoonerError as exc:
                broken = True
                frame = Frame(frame.overview, frame.activity, frame.where, one_line(exc))
            live.update(render(frame, console.width), refresh=True)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
