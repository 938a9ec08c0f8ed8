"""The ``schooner`` command: run and drive a Schooner cluster from the shell, on any manager.

    schooner [--manager local|docker|kubernetes] [--cluster NAME] COMMAND ...

    schooner start   [--query-port 1337] [--management-port 1338] ...   (local, docker, kubernetes)
    schooner stop | destroy [--yes] | status [--json] | restart-query-frontends
    schooner logs    [NAME] [-n LINES] [--out DIR]
    schooner register APP --input-type T [--default-output X] [--slo-micros N] [--exist-ok]
    schooner unregister APP
    schooner deploy  NAME VERSION --input-type T
                     (--func module:callable [--path DIR] | --pickle FILE | --onnx FILE
                      [--output-name N]) [--replicas N] [--batch-size N] [--pkg REQ ...]
                     [--output-type T]
    schooner link | unlink APP MODEL [--version V]
    schooner set-pipeline APP STAGE [STAGE ...] [--reset-state]   or --file FILE|-
                     STAGE: MODEL[:VERSION][,...][@POLICY[:KEY=VALUE,...]], e.g.
                     `schooner set-pipeline reviews embed clf:1,clf:2@exp4:eta=0.2`
    schooner pipeline APP [--json]
    schooner predict APP JSON_INPUT [--batch] [--version V] [--api-key-stdin]
    schooner apps | models | replicas  [--json]
    schooner scale MODEL N [--version V]
    schooner set-version MODEL VERSION
    schooner set-policy APP POLICY [--param KEY=VALUE ...] [--reset-state] [--stage N]
    schooner policy-state APP [--uid UID] [--stage N] [--json]
    schooner create-api-key APP          prints the new key (shown once) and its sha256
    schooner revoke-api-key APP SHA256   or KEY read from stdin with '-'
    schooner rotate-admin-token
    schooner top     [--interval 2] [--once] [--app NAME] [--window 300]
                     a live view: throughput, latency, defaults, replicas, cache

``--manager`` defaults to ``$SCHOONER_MANAGER``, else ``local``; ``--cluster`` to
``$SCHOONER_CLUSTER``, else ``default``. Every command attaches to the cluster by its name
(``_managers`` says how for each manager): a local cluster by its data directory
(``--data-dir``, default ``$SCHOONER_HOME/<cluster>`` or ``~/.schooner/<cluster>``), a
Docker cluster by its containers' labels, a Kubernetes cluster by its objects' labels in
``--namespace``. Every command that talks to the management API sends the cluster's admin
token, which the manager reads from the cluster (``$SCHOONER_ADMIN_TOKEN`` overrides); no
credential is ever taken from, or shown in, the command line but the new API key
``create-api-key`` prints. Output goes to stdout, progress and errors to stderr; the exit
status is 0 on success, 1 on a Schooner error and 2 on a usage error. A command that
connects does so in a ``with`` block, so its connections are closed however it ends.

The modules: ``_parser`` (the command line), ``_managers`` (which cluster, and how to
reach it), ``_cluster``, ``_verbs``, ``_deploy``, ``_pipeline`` and ``_predict`` (the verbs),
``_inventory`` (what runs, and its logs, per manager), ``_tables`` (printing) and
``_top`` with ``_top_view`` (the live view and its frames).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from admin.cli._parser import build_parser, policy_param, usage_problem
from admin.exceptions import SchoonerError

__all__ = ["build_parser", "main", "policy_param"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = usage_problem(args)
    if problem:
        parser.error(problem)  # exits with status 2
    try:
        return int(args.run(args))
    except SchoonerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout piped into `head`, which has read enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
