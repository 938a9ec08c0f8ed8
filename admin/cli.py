"""The ``schooner`` command: start, stop and look at a local Schooner cluster.

    schooner start   [--data-dir DIR] [--query-port 1337] [--management-port 1338] ...
    schooner stop    [--data-dir DIR]
    schooner status  [--data-dir DIR] [--json]
    schooner restart-query-frontends     one at a time, each draining what it accepted
    schooner apps | models | replicas  [--data-dir DIR] [--json]
    schooner scale MODEL N [--version V]
    schooner set-version MODEL VERSION
    schooner set-policy APP POLICY [--param KEY=VALUE ...] [--reset-state]
    schooner policy-state APP [--uid UID] [--json]
    schooner logs    [NAME] [-n LINES] [--out DIR]
    schooner create-api-key APP          prints the new key (shown once) and its sha256
    schooner revoke-api-key APP SHA256   or KEY read from stdin with '-'
    schooner rotate-admin-token

Every command finds the cluster by its data directory (default ``$SCHOONER_HOME/default``
or ``~/.schooner/default``), whose ``cluster.json`` holds the ports it was started with.
Every command sends the cluster's admin token, read from ``<data_dir>/admin-token``
(``$SCHOONER_ADMIN_TOKEN`` overrides); no credential is ever taken from, or shown in, the
command line but the new API key ``create-api-key`` prints. Output goes to stdout,
progress and errors to stderr; the exit status is 0 on success, 1 on a Schooner error
and 2 on a usage error. A command that connects does so in a
``with`` block, so its connections are closed however it ends.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from admin._connection import Connection
from admin.container_managers._processes import log_tail
from admin.container_managers.local import LocalContainerManager, default_data_dir
from admin.exceptions import ClusterNotRunningError, SchoonerError


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _manager(args: argparse.Namespace, **ports: Any) -> LocalContainerManager:
    return LocalContainerManager(
        data_dir=args.data_dir or default_data_dir(args.cluster_name),
        cluster_name=args.cluster_name,
        **ports,
    )


def _connect(args: argparse.Namespace, manager: LocalContainerManager | None = None) -> Connection:
    """A Connection attached to the running cluster, to use in a ``with`` block."""
    conn = Connection(manager or _manager(args), progress=_stderr)
    try:
        conn.connect()
    except BaseException:
        conn.close()
        raise
    return conn


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _cell(value: Any) -> str:
    """A table cell: nothing for a missing or null value (never a literal None)."""
    return "" if value is None else str(value)


def _show(args: argparse.Namespace, rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif rows:
        print(_table(rows, columns))


# --------------------------------------------------------------------------- commands


def cmd_start(args: argparse.Namespace) -> int:
    manager = _manager(
        args,
        host=args.host,
        query_port=args.query_port,
        management_port=args.management_port,
        rpc_port=args.rpc_port,
        redis_port=args.redis_port,
        redis_url=args.redis_url,
        python_executable=args.python or sys.executable,
        query_frontends=args.query_frontends,
    )
    with Connection(manager, progress=_stderr) as conn:
        conn.start()
        print(f"query frontend:      http://{conn.get_query_addr()}")
        print(f"management frontend: http://{conn.get_management_addr()}")
    print(f"data dir:            {manager.data_dir}")
    print(f"stop it with:        schooner stop --data-dir {manager.data_dir}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    manager = _manager(args)
    manager.stop_all()
    print(f"stopped Schooner on {manager.data_dir}")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    manager = _manager(args)
    if not args.yes:
        question = (
            f"stop Schooner on {manager.data_dir} and delete its apps, models, logs and "
            "secrets? [y/N] "
        )
        if not sys.stdin.isatty():
            _stderr(f"refusing to delete {manager.data_dir} without --yes (no terminal to ask)")
            return 2
        if input(question).strip().lower() not in ("y", "yes"):
            print("nothing deleted")
            return 1
    removed = manager.destroy()
    print(f"destroyed Schooner on {manager.data_dir} ({len(removed)} entries removed)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    manager = _manager(args)
    processes = manager.processes()
    try:
        conn = _connect(args, manager)
    except ClusterNotRunningError as exc:
        if args.json:
            print(json.dumps({"running": False, "processes": processes}, indent=2))
        else:
            print(f"not running: {exc}")
        return 1
    with conn:
        instance = conn.inspect_instance()
    if args.json:
        doc = {
            "running": True,
            "query_addr": manager.get_query_addr(),
            "management_addr": manager.get_management_addr(),
            "data_dir": str(manager.data_dir),
            "processes": processes,
            "instance": instance,
        }
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"running on {manager.data_dir}")
    print(f"queries at http://{manager.get_query_addr()}, ", end="")
    print(f"management at http://{manager.get_management_addr()}\n")
    print(_table(processes, ["name", "role", "pid", "running", "state", "restarts", "reason"]))
    apps = []
    for name, route in dict(instance.get("apps", {})).items():
        # "models": every model:version the app's links route to (older frontends: "model").
        routes = route.get("models") or ([route["model"]] if route.get("model") else [])
        apps.append({"app": name, **route, "models": ",".join(routes)})
    if apps:
        print()
        print(_table(apps, ["app", "policy", "models", "slo_micros", "reason"]))
    open_apps = [a["app"] for a in apps if a.get("api_keys") is False]
    if open_apps and not _is_loopback(manager.host):
        print(
            f"\nopen to anyone who reaches {manager.get_query_addr()} (no API key): "
            f"{', '.join(open_apps)}; `schooner create-api-key APP` closes one"
        )
    return 0


def cmd_restart_query_frontends(args: argparse.Namespace) -> int:
    manager = _manager(args)
    manager.report.callback = _stderr
    manager.connect()
    manager.restart_query_frontends()
    print(f"restarted {manager.query_frontends} query frontend(s) on {manager.data_dir}")
    return 0


def cmd_apps(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        apps = conn.get_all_apps(verbose=True)
        for app in apps:
            app["linked_models"] = ",".join(conn.get_linked_models(app["name"]))
    columns = ["name", "input_type", "slo_micros", "policy", "cache_enabled", "linked_models"]
    _show(args, apps, columns)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        models = conn.get_all_models(verbose=True)
    columns = ["name", "version", "input_type", "is_current_version", "num_replicas"]
    _show(args, models, columns)
    return 0


def cmd_replicas(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        replicas = conn.get_all_model_replicas(verbose=True)
    _show(args, replicas, ["replica_id", "model_name", "model_version", "pid", "frontend"])
    return 0


def cmd_scale(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        conn.set_num_replicas(args.model, args.num_replicas, version=args.version)
    return 0


def cmd_set_version(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        conn.set_model_version(args.model, args.version)
    return 0


def cmd_set_policy(args: argparse.Namespace) -> int:
    params = dict(args.param or [])
    with _connect(args) as conn:
        app = conn.set_selection_policy(
            args.app, args.policy, reset_state=args.reset_state, **params
        )
    print(json.dumps({k: app.get(k) for k in ("name", "policy", "policy_params")}, indent=2))
    return 0


def cmd_policy_state(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        state = conn.get_policy_state(args.app, uid=args.uid)
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    whose = f", user {state['uid']}" if state.get("uid") is not None else ""
    print(f"app {state['app']}{whose}: policy {state['policy']}, {state['updates']} update(s)")
    arms = [{"arm": arm, **entry} for arm, entry in dict(state.get("arms", {})).items()]
    for row in arms:
        row["probability"] = f"{row['probability']:.3f}"
        row["log_weight"] = f"{row['log_weight']:.3f}"
        loss = row.get("mean_loss")
        row["mean_loss"] = "-" if loss is None else f"{loss:.4g}"
        row["linked"] = "no" if row.get("linked") is False else "yes"
    if arms:
        print()
        columns = ["arm", "probability", "log_weight", "updates", "mean_loss", "linked"]
        print(_table(arms, columns))
    return 0


def cmd_create_api_key(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        key = conn.create_api_key(args.app)
    print(key)
    return 0


def cmd_revoke_api_key(args: argparse.Namespace) -> int:
    key = sys.stdin.readline().strip() if args.key == "-" else args.key
    with _connect(args) as conn:
        conn.revoke_api_key(args.app, key)
    return 0


def cmd_rotate_admin_token(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        conn.rotate_admin_token()
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    manager = _manager(args)
    if args.out:
        for path in manager.get_logs(args.out):
            print(path)
        return 0
    logs = sorted((manager.data_dir / "logs").glob("*.log"))
    if args.name is None:
        for log in logs:
            print(log.stem)
        return 0
    log_path = manager.data_dir / "logs" / f"{args.name}.log"
    if not log_path.is_file():
        known = ", ".join(log.stem for log in logs) or "none yet"
        print(f"error: no log named {args.name!r} (known: {known})", file=sys.stderr)
        return 1
    print(log_tail(log_path, args.lines))
    return 0


# --------------------------------------------------------------------------- parser

# Keyword arguments of set_selection_policy that a --param may not shadow.
_NOT_PARAMS = ("app_name", "policy", "reset_state")


def policy_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--param``: the value as JSON when it parses, else the string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or key in _NOT_PARAMS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE with a parameter name as KEY "
            '(e.g. eta=0.2, loss=squared, weights=\'{"m:1": 90, "m:2": 10}\')'
        )
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        type=Path,
        help="the cluster's data directory (default: $SCHOONER_HOME/<name> or ~/.schooner/<name>)",
    )
    common.add_argument("--cluster-name", default="default", help="default: %(default)s")
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON")

    parser = argparse.ArgumentParser(
        prog="schooner", description="Run and inspect a local Schooner cluster."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], help_text: str, *parents: Any
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common, *parents], help=help_text)
        p.set_defaults(func=func)
        return p

    start = add("start", cmd_start, "start Redis, both frontends and the deployed models")
    start.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s)")
    start.add_argument("--query-port", type=int, default=1337)
    start.add_argument("--management-port", type=int, default=1338)
    start.add_argument("--rpc-port", type=int, default=7000)
    start.add_argument("--redis-port", type=int, default=16379)
    start.add_argument("--redis-url", help="use this Redis instead of starting one")
    start.add_argument("--python", help="the interpreter model replicas run under")
    start.add_argument(
        "--query-frontends",
        type=int,
        default=1,
        help="query frontend processes sharing the query port (default: %(default)s)",
    )
    add("stop", cmd_stop, "stop every process of the cluster (state is kept)")
    destroy = add(
        "destroy", cmd_destroy, "stop the cluster and delete its state, for a clean start"
    )
    destroy.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add("status", cmd_status, "is it running, and what is it serving", listing)
    add(
        "restart-query-frontends",
        cmd_restart_query_frontends,
        "restart the query frontends one at a time (each drains what it accepted)",
    )
    add("apps", cmd_apps, "list applications", listing)
    add("models", cmd_models, "list model versions", listing)
    add("replicas", cmd_replicas, "list connected model replicas", listing)
    scale = add("scale", cmd_scale, "set the number of replicas of a model version")
    scale.add_argument("model")
    scale.add_argument("num_replicas", type=int)
    scale.add_argument("--version", help="default: the current version")
    set_version = add("set-version", cmd_set_version, "make a version current (roll back)")
    set_version.add_argument("model")
    set_version.add_argument("version")
    set_policy = add("set-policy", cmd_set_policy, "set an app's selection policy, live")
    set_policy.add_argument("app")
    set_policy.add_argument("policy", help="single, split, exp3 or exp4")
    set_policy.add_argument(
        "--param",
        action="append",
        type=policy_param,
        metavar="KEY=VALUE",
        help="a policy setting, repeatable; VALUE is read as JSON when it parses "
        '(eta=0.2, loss=squared, weights=\'{"m:1": 90, "m:2": 10}\')',
    )
    set_policy.add_argument(
        "--reset-state",
        action="store_true",
        help="forget what the policy learned even if its name stays the same",
    )
    policy_state = add(
        "policy-state", cmd_policy_state, "what an app's selection policy learned", listing
    )
    policy_state.add_argument("app")
    policy_state.add_argument("--uid", help="what this user sees (their feedback included)")
    create_key = add("create-api-key", cmd_create_api_key, "make an API key for an app")
    create_key.add_argument("app")
    revoke_key = add("revoke-api-key", cmd_revoke_api_key, "revoke one of an app's API keys")
    revoke_key.add_argument("app")
    revoke_key.add_argument(
        "key",
        metavar="SHA256",
        help="the key's sha256 (printed when it was made), or '-' to read the key itself "
        "from stdin (never pass a key on the command line: ps shows it to everyone)",
    )
    add("rotate-admin-token", cmd_rotate_admin_token, "replace the cluster's admin token")
    logs = add("logs", cmd_logs, "list logs, print the end of one, or copy them all")
    logs.add_argument("name", nargs="?", help="e.g. query, management, redis, a replica id")
    logs.add_argument("-n", "--lines", type=int, default=50)
    logs.add_argument("--out", type=Path, help="copy every log into this directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SchoonerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
