"""The verbs that change or list what a running cluster serves: apps, links, model
versions, replicas, selection policies and keys. Each connects to the cluster the
command line names (``_managers.connect``), in a ``with`` block, and calls the
``Connection`` method of the same meaning; they work alike for every manager."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from admin._pipelines import describe
from admin.cli import _managers as managers
from admin.cli._tables import show, stderr, table, to_json
from admin.exceptions import ConflictError

# --------------------------------------------------------------------------- listings


def cmd_apps(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        apps = conn.get_all_apps(verbose=True)
        for app in apps:
            app["linked_models"] = ",".join(conn.get_linked_models(app["name"]))
    columns = ["name", "input_type", "slo_micros", "policy", "cache_enabled", "linked_models"]
    for app in apps:  # a pipeline app's stages on one line: feat -> clf
        stages = app.get("pipeline")
        if isinstance(stages, list) and len(stages) > 1:
            app["stages"] = describe(stages)
    if any("stages" in app for app in apps):
        columns.append("stages")
    show(args, apps, columns)
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        models = conn.get_all_models(verbose=True)
    columns = ["name", "version", "input_type", "is_current_version", "num_replicas"]
    show(args, models, columns)
    return 0


def cmd_replicas(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        replicas = conn.get_all_model_replicas(verbose=True)
    show(args, replicas, ["replica_id", "model_name", "model_version", "pid", "frontend"])
    return 0


# --------------------------------------------------------------------------- applications


def cmd_register(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        try:
            app = conn.register_application(
                args.app,
                args.input_type,
                args.default_output,
                args.slo_micros,
                exist_ok=args.exist_ok,
            )
        except ConflictError as exc:
            # The fix in the words of this command line, not of the Python API.
            message = str(exc).replace("pass exist_ok=True", "pass --exist-ok")
            message = message.replace(
                f"unregister_application({args.app!r})", f"`schooner unregister {args.app}`"
            )
            raise ConflictError(message, status_code=exc.status_code, code=exc.code) from exc
    keys = ("name", "input_type", "default_output", "slo_micros", "policy")
    print(to_json({k: app.get(k) for k in keys if k in app}))
    return 0


def cmd_unregister(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        conn.unregister_application(args.app)
    print(f"unregistered {args.app} (its links went with it; the models stay deployed)")
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        conn.link_model_to_app(args.app, args.model, version=args.version)
    pinned = f":{args.version}" if args.version else ""
    print(f"linked {args.model}{pinned} to {args.app}")
    return 0


def cmd_unlink(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        conn.unlink_model_from_app(args.app, args.model, version=args.version)
    pinned = f":{args.version}" if args.version else ""
    print(f"unlinked {args.model}{pinned} from {args.app}")
    return 0


# --------------------------------------------------------------------------- models


def cmd_scale(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        conn.set_num_replicas(args.model, args.num_replicas, version=args.version)
    which = f"{args.model}:{args.version}" if args.version else f"the current {args.model}"
    print(f"{which} runs {args.num_replicas} replica(s)")
    return 0


def cmd_set_version(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        conn.set_model_version(args.model, args.version)
    print(f"{args.model}:{args.version} is current")
    return 0


# --------------------------------------------------------------------------- policies


def cmd_set_policy(args: argparse.Namespace) -> int:
    params = dict(args.param or [])
    with managers.connect(args) as conn:
        app = conn.set_selection_policy(
            args.app, args.policy, reset_state=args.reset_state, **_stage(args), **params
        )
    shown = {k: app.get(k) for k in ("name", "policy", "policy_params")}
    stages = app.get("pipeline") or []
    if args.stage != 1 and len(stages) >= args.stage:
        stage = stages[args.stage - 1]
        shown.update(stage=args.stage, policy=stage.get("policy"))
        shown["policy_params"] = stage.get("policy_params")
    print(json.dumps(shown, indent=2))
    return 0


def _stage(args: argparse.Namespace) -> dict[str, int]:
    """``stage=`` for a pipeline's later stage; nothing for the first (the default)."""
    return {} if args.stage == 1 else {"stage": args.stage}


def cmd_policy_state(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        state = conn.get_policy_state(args.app, uid=args.uid, **_stage(args))
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    whose = f", user {state['uid']}" if state.get("uid") is not None else ""
    which = f", stage {args.stage}" if args.stage != 1 else ""
    print(
        f"app {state['app']}{which}{whose}: policy {state['policy']}, {state['updates']} update(s)"
    )
    arms: list[dict[str, Any]] = [
        {"arm": arm, **entry} for arm, entry in dict(state.get("arms", {})).items()
    ]
    for row in arms:
        row["probability"] = f"{row['probability']:.3f}"
        row["log_weight"] = f"{row['log_weight']:.3f}"
        loss = row.get("mean_loss")
        row["mean_loss"] = "-" if loss is None else f"{loss:.4g}"
        row["linked"] = "no" if row.get("linked") is False else "yes"
    if arms:
        print()
        columns = ["arm", "probability", "log_weight", "updates", "mean_loss", "linked"]
        print(table(arms, columns))
    return 0


# --------------------------------------------------------------------------- credentials


def cmd_create_api_key(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        key = conn.create_api_key(args.app)
    print(key)
    return 0


def cmd_revoke_api_key(args: argparse.Namespace) -> int:
    key = sys.stdin.readline().strip() if args.key == "-" else args.key
    with managers.connect(args) as conn:
        conn.revoke_api_key(args.app, key)
    return 0


def cmd_rotate_admin_token(args: argparse.Namespace) -> int:
    with managers.connect(args) as conn:
        conn.rotate_admin_token()
    stderr("the admin token is replaced; clients read the new one from the cluster")
    return 0
