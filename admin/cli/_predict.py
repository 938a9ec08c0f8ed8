"""``schooner predict``: ask an app for a prediction, as an application would.

The input is one JSON value on the command line (or ``-``: read from stdin); with
``--batch`` a JSON list of inputs, answered together. The answer is printed as JSON:
``output``, ``default`` (whether it is the app's default output, and then
``default_explanation`` says why), ``models`` and ``query_id`` -- a list of them for a
batch. The query goes to the cluster's query frontend through
``admin.query_client.QueryClient``; the command needs no admin token, only the app's
API key when the app has keys, read from the first line of stdin with
``--api-key-stdin`` (never from the command line, where ``ps`` shows it to everyone).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from admin.cli import _managers as managers
from admin.cli._tables import stderr, to_json
from admin.query_client import QueryClient

FIELDS = ("query_id", "output", "default", "default_explanation", "models")
PARTIAL = ("partial", "missing", "partial_explanation")


def cmd_predict(args: argparse.Namespace) -> int:
    api_key = None
    if args.api_key_stdin:
        api_key = sys.stdin.readline().strip()
        if not api_key:
            stderr("error: --api-key-stdin: the first line of stdin is empty (no API key)")
            return 2
    raw = sys.stdin.read() if args.input == "-" else args.input
    try:
        x = json.loads(raw)
    except ValueError as exc:
        stderr(
            f"error: the input is not JSON ({exc}): e.g. '[1.0, 2.0]', '\"text\"', or with "
            "--batch '[[1.0, 2.0], [3.0, 4.0]]'"
        )
        return 2
    if args.batch and not isinstance(x, list):
        stderr(f"error: --batch takes a JSON list of inputs, got {type(x).__name__}")
        return 2
    with managers.manager(args) as cm:
        cm.connect()  # where the query frontend listens; no admin token needed
        with QueryClient(cm.query_url, api_key=api_key, verify=cm.tls_verify()) as client:
            pinned = {"version": args.version} if args.version is not None else {}
            if args.batch:
                answer: Any = [as_dict(p) for p in client.predict_batch(args.app, x, **pinned)]
            else:
                answer = as_dict(client.predict(args.app, x, **pinned))
    print(to_json(answer))
    return 0


def as_dict(prediction: Any) -> dict[str, Any]:
    """A ``Prediction`` as the JSON the query frontend answers with: no null
    ``default_explanation`` when the answer is no default, and the ``partial`` fields
    only for an ensemble that combined some of its models' answers."""
    doc = {f: getattr(prediction, f, None) for f in (*FIELDS, *PARTIAL)}
    if doc["default_explanation"] is None:
        del doc["default_explanation"]
    if not doc["partial"]:
        for f in PARTIAL:
            del doc[f]
    return {k: list(v) if isinstance(v, tuple) else v for k, v in doc.items()}
