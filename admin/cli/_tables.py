"""How the ``schooner`` command prints: tables with a header row, or JSON.

Every cell goes through ``cell``: a missing or null value prints as nothing, never as a
literal ``None``; nested values print as compact JSON. Output goes to stdout, progress
and errors to stderr (``stderr``), so that stdout can be piped.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def stderr(line: str) -> None:
    """A progress or error line, on stderr."""
    print(line, file=sys.stderr, flush=True)


def cell(value: Any) -> str:
    """A table cell: nothing for a missing or null value (never a literal None)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=str)
    return str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """``rows`` as columns padded to their widest cell, under an upper-case header."""
    cells = [[cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, default=str)


def show(args: argparse.Namespace, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    """``rows`` as JSON with ``--json``, else as a table (nothing when there are none)."""
    if getattr(args, "json", False):
        print(to_json(rows))
    elif rows:
        print(table(rows, columns))
