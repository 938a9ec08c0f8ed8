"""The verbs that run a cluster as a whole: start, stop, destroy, status, restart the query
frontends, and logs. Each works for every manager (``_managers``); what runs and its logs
are read through ``_inventory``."""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from typing import Any

from admin import _status
from admin._connection import Connection
from admin._pipelines import describe
from admin.cli import _inventory as inventory
from admin.cli import _managers as managers
from admin.cli._tables import stderr, table, to_json
from admin.container_managers.base import ContainerManager
from admin.container_managers.docker import DockerContainerManager
from admin.container_managers.kubernetes import KubernetesContainerManager
from admin.container_managers.local import LocalContainerManager
from admin.exceptions import ClusterNotRunningError, ContainerManagerError, SchoonerError


def cmd_start(args: argparse.Namespace) -> int:
    cm = managers.manager(args, **managers.start_options(args))
    with managers.connection(args, cm) as conn:
        conn.start()
        print(f"query frontend:      {cm.query_url}")
        print(f"management frontend: {cm.management_url}")
    if isinstance(cm, LocalContainerManager):
        print(f"data dir:            {cm.data_dir}")
    print(f"stop it with:        {managers.command_line(args, cm, 'stop')}")
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    with managers.manager(args) as cm:
        cm.stop_all()
        print(f"stopped Schooner on {managers.where(args, cm)}")
    return 0


def cmd_destroy(args: argparse.Namespace) -> int:
    with managers.manager(args) as cm:
        where = managers.where(args, cm)
        if not args.yes:
            if not sys.stdin.isatty():
                stderr(f"refusing to delete Schooner on {where} without --yes (no terminal to ask)")
                return 2
            question = (
                f"stop Schooner on {where} and delete its apps, models, logs and secrets? [y/N] "
            )
            if input(question).strip().lower() not in ("y", "yes"):
                print("nothing deleted")
                return 1
        count = ""
        if isinstance(cm, LocalContainerManager):
            count = f" ({len(cm.destroy())} entries removed)"
        elif isinstance(cm, DockerContainerManager | KubernetesContainerManager):
            cm.destroy()
        else:
            raise ContainerManagerError(f"schooner cannot destroy a {type(cm).__name__}")
        print(f"destroyed Schooner on {where}{count}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with managers.manager(args) as cm:
        try:
            conn = managers.connect(args, cm)
        except ClusterNotRunningError as exc:
            if args.json:
                doc: dict[str, Any] = {"running": False, "manager": args.manager}
                if isinstance(cm, LocalContainerManager):
                    doc["processes"] = cm.processes()
                print(to_json(doc))
            else:
                print(f"not running: {exc}")
            return 1
        with conn:
            instance = conn.inspect_instance()
            parts, columns = inventory.components(cm)
            pipelines = _recorded_pipelines(conn)
        apps = _app_rows(instance, pipelines)
        if args.json:
            doc = {
                "running": True,
                "manager": args.manager,
                "cluster": args.cluster,
                "query_addr": cm.get_query_addr(),
                "management_addr": cm.get_management_addr(),
                "instance": instance,
            }
            if isinstance(cm, LocalContainerManager):
                doc["data_dir"] = str(cm.data_dir)
                doc["processes"] = parts
            else:
                doc["components"] = parts
            print(json.dumps(doc, indent=2, default=str))
            return 0
        print(f"running on {managers.where(args, cm)}")
        print(f"queries at {cm.query_url}, management at {cm.management_url}\n")
        print(table(parts, columns))
        if apps:
            print()
            app_columns = ["app", "policy", "models", "slo_micros", "reason"]
            if any(a.get("pipeline") for a in apps):
                app_columns.insert(3, "pipeline")
            print(table(apps, app_columns))
        open_apps = [a["app"] for a in apps if a.get("api_keys") is False]
        if open_apps and not _is_loopback(_bind_host(cm)):
            print(
                f"\nopen to anyone who reaches {cm.get_query_addr()} (no API key): "
                f"{', '.join(open_apps)}; `schooner create-api-key APP` closes one"
            )
    return 0


def _recorded_pipelines(conn: Connection) -> dict[str, list[dict[str, Any]]]:
    """Each app's stages as the management API records them; none when it cannot say
    (status shows what it can: the query frontend's view and the processes)."""
    try:
        apps = conn.get_all_apps(verbose=True)
    except SchoonerError:
        return {}
    return {
        str(a.get("name")): a["pipeline"]
        for a in apps
        if isinstance(a, dict) and isinstance(a.get("pipeline"), list)
    }


def _app_rows(
    instance: dict[str, Any], pipelines: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """One row per app the query frontend serves. A pipeline app's "models" are every
    stage's, stage by stage (``a:1 -> b:2``) where the query frontend lists its stages,
    and its "pipeline" the stages the management API records (``feat -> clf``)."""
    apps = []
    served = dict(instance.get("apps", {}))
    for name, route in served.items():
        # "models": every model:version the app's links route to (older frontends: "model").
        routes = route.get("models") or ([route["model"]] if route.get("model") else [])
        row = {"app": name, **route, "models": ",".join(routes)}
        stages = _status.app_stages(served, name)
        if stages is not None and len(stages) > 1:
            row["models"] = " -> ".join(_stage_routes(stage) for stage in stages)
        recorded = pipelines.get(name) or []
        row["pipeline"] = describe(recorded) if len(recorded) > 1 else None
        apps.append(row)
    return apps


def _stage_routes(stage: dict[str, Any]) -> str:
    """The model versions one stage routes to, "?" for an arm that cannot be served."""
    arms = stage.get("arms")
    if isinstance(arms, dict):
        return ",".join(sorted({str(v) if v else f"{k}?" for k, v in arms.items()})) or "-"
    return ",".join(str(a) for a in arms or []) or "-"


def _bind_host(cm: ContainerManager) -> str:
    """Where the query port listens: the address it is bound or published on."""
    if isinstance(cm, LocalContainerManager):
        return cm.host
    if isinstance(cm, DockerContainerManager):
        return cm.settings.host
    return cm.get_query_addr().rpartition(":")[0].strip("[]")


def _is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cmd_restart_query_frontends(args: argparse.Namespace) -> int:
    with managers.manager(args) as cm:
        cm.report.callback = stderr
        cm.connect()
        cm.restart_query_frontends()
        print(f"restarted the query frontend(s) of Schooner on {managers.where(args, cm)}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with managers.manager(args) as cm:
        if args.out:
            for path in cm.get_logs(args.out):
                print(path)
            return 0
        if args.name is None:
            for name in inventory.log_names(cm):
                print(name)
            return 0
        text = inventory.log_tail(cm, args.name, args.lines)
        if text is None:
            known = ", ".join(inventory.log_names(cm)) or "none yet"
            stderr(f"error: no log named {args.name!r} (known: {known})")
            return 1
        print(text)
    return 0
