"""The ``schooner`` command line: every verb, every argument, each with its help text.

The options that say which cluster a command drives (``--manager``, ``--cluster``,
``--data-dir``, ``--namespace``, ...: ``_managers``) are accepted before the verb and
after it alike: ``schooner --manager docker apps`` and ``schooner apps --manager docker``
are the same command. Given after the verb they win. A test asserts that every argument
of every verb has a help text.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from admin._overview import MAX_WINDOW_S, MIN_WINDOW_S, OVERVIEW_WINDOW_S
from admin.cli import _cluster as cluster
from admin.cli import _deploy as deploy
from admin.cli import _managers as managers
from admin.cli import _pipeline as pipeline
from admin.cli import _predict as predict
from admin.cli import _prometheus as prometheus
from admin.cli import _top as top
from admin.cli import _verbs as verbs

Command = Callable[[argparse.Namespace], int]

# Keyword arguments of set_selection_policy that a --param may not shadow.
_NOT_PARAMS = ("app_name", "policy", "reset_state", "stage")


def policy_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--param``: the value as JSON when it parses, else the string."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key.isidentifier() or key in _NOT_PARAMS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not KEY=VALUE with a parameter name as KEY "
            '(e.g. eta=0.2, loss=squared, weights=\'{"m:1": 90, "m:2": 10}\')'
        )
    return key, json_or_text(raw)


def json_or_text(raw: str) -> Any:
    """``raw`` read as JSON when it parses (``-1.0`` is a number), else the string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return value


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds > 0")
    return value


def window_seconds(text: str) -> int:
    low, high = MIN_WINDOW_S, MAX_WINDOW_S
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
    return value


def _target_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """Which cluster, and how to reach it. On the top-level parser with their defaults;
    after a verb with none (``SUPPRESS``), so that they override only when given."""

    def default(value: Any) -> Any:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("which cluster")
    group.add_argument(
        "--manager",
        metavar="{local,docker,kubernetes}",
        default=default(os.environ.get(managers.MANAGER_ENV, managers.LOCAL)),
        help="the container manager that runs the cluster: local, docker or kubernetes "
        f"(default: ${managers.MANAGER_ENV}, else local)",
    )
    group.add_argument(
        "--cluster",
        "--cluster-name",
        dest="cluster",
        metavar="NAME",
        default=default(os.environ.get(managers.CLUSTER_ENV, "default")),
        help=f"the cluster's name (default: ${managers.CLUSTER_ENV}, else default)",
    )
    group.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=default(None),
        help="the CA to verify the frontends' HTTPS certificates with (default: "
        "$SCHOONER_TLS_CA, else the system's trust store)",
    )
    local = parser.add_argument_group("local manager")
    local.add_argument(
        "--data-dir",
        type=Path,
        default=default(None),
        help="the cluster's data directory (default: $SCHOONER_HOME/<cluster> or "
        "~/.schooner/<cluster>)",
    )
    images = parser.add_argument_group("docker and kubernetes managers: model images")
    images.add_argument(
        "--registry",
        default=default(None),
        help="where images are pushed and pulled (default: $SCHOONER_REGISTRY; kubernetes "
        "needs one)",
    )
    images.add_argument(
        "--base-image",
        default=default(None),
        help="the Python image the cluster's images are built FROM (default: "
        "$SCHOONER_BASE_IMAGE, else python:3.11-slim); pass what the cluster started with",
    )
    images.add_argument(
        "--wheelhouse",
        type=Path,
        default=default(None),
        help="a directory of wheels that image builds install from alone (offline builds)",
    )
    kube = parser.add_argument_group("kubernetes manager")
    kube.add_argument(
        "--namespace",
        default=default(None),
        help="the namespace the cluster runs in (default: $SCHOONER_NAMESPACE, else schooner)",
    )
    kube.add_argument("--kube-context", default=default(None), help="a context of the kubeconfig")
    kube.add_argument(
        "--kubeconfig",
        default=default(None),
        help="the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)",
    )
    kube.add_argument(
        "--query-addr",
        metavar="HOST:PORT",
        default=default(None),
        help="where this machine reaches the query Service (e.g. through kubectl "
        "port-forward), instead of the address the Service gives",
    )
    kube.add_argument(
        "--management-addr",
        metavar="HOST:PORT",
        default=default(None),
        help="where this machine reaches the management Service, likewise",
    )
    kube.add_argument(
        "--frontend-image",
        default=default(None),
        help="a frontend image already pushed (skips building it at start)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schooner",
        description="Run and drive a Schooner cluster: local processes, Docker containers "
        "or Kubernetes pods.",
        epilog="Exit status: 0 on success, 1 on a Schooner error, 2 on a usage error.",
    )
    _target_options(parser, top=True)
    listing = argparse.ArgumentParser(add_help=False)
    listing.add_argument("--json", action="store_true", help="print JSON instead of a table")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument(
        "--deploy-timeout",
        type=float,
        metavar="SECONDS",
        help="how long to wait for replicas to connect (default: 60)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Command, text: str, *parents: Any) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=list(parents), help=text, description=text)
        p.set_defaults(run=func)
        return p

    _cluster_verbs(add, listing)
    _app_verbs(add, listing)
    _model_verbs(add, listing, waiting)
    _policy_and_key_verbs(add, listing)
    _watch_verbs(add)
    for verb in sub.choices.values():  # after each verb's own arguments, in its help too
        _target_options(verb, top=False)
    return parser


Add = Callable[..., argparse.ArgumentParser]


def _cluster_verbs(add: Add, listing: argparse.ArgumentParser) -> None:
    start = add("start", cluster.cmd_start, "start Redis, both frontends and the deployed models")
    start.add_argument("--host", help="bind address (local, docker; default: 127.0.0.1)")
    for port, default in (("query", 1337), ("management", 1338)):
        start.add_argument(
            f"--{port}-port", type=int, help=f"the {port} frontend's port (default: {default})"
        )
    start.add_argument(
        "--rpc-port", type=int, help="the replicas' RPC port (local, docker; default: 7000)"
    )
    start.add_argument(
        "--redis-port",
        type=int,
        help="Redis's port (local, default: 16379; docker, default: 6379)",
    )
    start.add_argument("--redis-url", help="use this Redis instead of starting one")
    start.add_argument("--python", help="the interpreter local model replicas run under")
    start.add_argument(
        "--query-frontends",
        type=positive_int,
        metavar="N",
        help="query frontends sharing the query port (default: 1; kubernetes: 2)",
    )
    start.add_argument(
        "--network-mode",
        choices=("network", "host"),
        help="docker: a user-defined network (default) or the host's network stack",
    )
    start.add_argument(
        "--docker-network", help="docker: the user network's name (default: schooner-<cluster>)"
    )
    start.add_argument(
        "--tls-certfile", help="a PEM certificate: both frontends serve HTTPS (local, docker)"
    )
    start.add_argument("--tls-keyfile", help="the PEM key of --tls-certfile")
    start.add_argument(
        "--tls-secret", help="kubernetes: a kubernetes.io/tls Secret the frontends serve HTTPS with"
    )
    start.add_argument(
        "--service-type",
        choices=("ClusterIP", "NodePort", "LoadBalancer"),
        help="kubernetes: how the frontends' Services are exposed (default: ClusterIP)",
    )
    add("stop", cluster.cmd_stop, "stop every part of the cluster (its state is kept)")
    destroy = add(
        "destroy", cluster.cmd_destroy, "stop the cluster and delete its state, for a clean start"
    )
    destroy.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    add("status", cluster.cmd_status, "is it running, and what is it serving", listing)
    add(
        "restart-query-frontends",
        cluster.cmd_restart_query_frontends,
        "restart the query frontends one at a time (each drains what it accepted)",
    )
    logs = add(
        "logs",
        cluster.cmd_logs,
        "list the logs (processes, containers or pods), print the end of one, or copy them all",
    )
    logs.add_argument(
        "name",
        nargs="?",
        help="whose log: e.g. query, management, redis, a replica id, a pod's name",
    )
    logs.add_argument(
        "-n", "--lines", type=int, default=50, help="how many lines (default: %(default)s)"
    )
    logs.add_argument("--out", type=Path, help="copy every log into this directory")
    prometheus.add_arguments(
        add(
            "prometheus",
            prometheus.cmd_prometheus,
            "where Prometheus finds this cluster's metrics (targets file, token, config)",
        )
    )


def _app_verbs(add: Add, listing: argparse.ArgumentParser) -> None:
    add("apps", verbs.cmd_apps, "list applications", listing)
    register = add("register", verbs.cmd_register, "register an application")
    register.add_argument("app", help="the application's name (lower case, digits, '-')")
    register.add_argument(
        "--input-type",
        required=True,
        help="what its queries carry: ints, floats, doubles, bytes, strings or json",
    )
    register.add_argument(
        "--default-output",
        type=json_or_text,
        help="the answer when no model answers in time, read as JSON when it parses "
        "('-1.0' is a number, 'none' a string; default: null)",
    )
    register.add_argument(
        "--slo-micros",
        type=positive_int,
        default=100000,
        help="the latency objective, in microseconds (default: %(default)s)",
    )
    register.add_argument(
        "--exist-ok",
        action="store_true",
        help="succeed if the app exists already with these same settings",
    )
    unregister = add(
        "unregister",
        verbs.cmd_unregister,
        "delete an application and its links (the models stay deployed)",
    )
    unregister.add_argument("app", help="the application's name")
    for name, func, text in (
        ("link", verbs.cmd_link, "route an application's queries to a model"),
        ("unlink", verbs.cmd_unlink, "remove a link between an application and a model"),
    ):
        p = add(name, func, text)
        p.add_argument("app", help="the application's name")
        p.add_argument("model", help="the model's name")
        p.add_argument(
            "--version",
            help="pin the link to this version (default: whichever version is current)",
        )
    pipeline.add_arguments(
        add(
            "set-pipeline",
            pipeline.cmd_set_pipeline,
            "chain models: each stage's outputs are the next stage's inputs",
        ),
        add("pipeline", pipeline.cmd_pipeline, "show an application's stages", listing),
    )
    p = add("predict", predict.cmd_predict, "ask an application for a prediction")
    p.add_argument("app", help="the application's name")
    p.add_argument(
        "input",
        metavar="JSON_INPUT",
        help="the input as JSON, e.g. '[1.0, 2.0]' (with --batch a list of inputs); '-' "
        "reads it from stdin",
    )
    p.add_argument("--batch", action="store_true", help="JSON_INPUT is a list of inputs")
    p.add_argument("--version", help="answer from this version of the app's model (pinned)")
    p.add_argument(
        "--api-key-stdin",
        action="store_true",
        help="read the app's API key from the first line of stdin (never pass a key on "
        "the command line: ps shows it to everyone)",
    )


def _model_verbs(
    add: Add, listing: argparse.ArgumentParser, waiting: argparse.ArgumentParser
) -> None:
    add("models", verbs.cmd_models, "list model versions", listing)
    add("replicas", verbs.cmd_replicas, "list connected model replicas", listing)
    d = add("deploy", deploy.cmd_deploy, "deploy a model version", waiting)
    d.add_argument("name", help="the model's name")
    d.add_argument("version", help="the version to deploy (it becomes current)")
    d.add_argument(
        "--input-type",
        required=True,
        help="what the model takes: ints, floats, doubles, bytes, strings or json",
    )
    source = d.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--func",
        type=deploy.func_spec,
        metavar="MODULE:CALLABLE",
        help="a function of your own code that takes a batch (e.g. mymodel:predict), "
        "imported here and pickled with the modules of yours it uses",
    )
    source.add_argument(
        "--pickle",
        type=Path,
        metavar="FILE",
        help="a pickle (or cloudpickle) file of a callable, or of a model with a predict "
        "method; loading it runs code: only load a file you made yourself",
    )
    source.add_argument(
        "--onnx", type=Path, metavar="FILE", help="an ONNX model file, run with onnxruntime"
    )
    d.add_argument(
        "--path",
        type=Path,
        action="append",
        metavar="DIR",
        help="a directory of your code, put first on sys.path for --func or --pickle; "
        "repeatable (default: the current directory)",
    )
    d.add_argument("--output-name", help="--onnx: the graph output to answer with")
    d.add_argument(
        "--output-type",
        help="what each output is, named as an input type (e.g. doubles for a list of "
        "numbers): a pipeline stage after it that cannot take it is refused when set",
    )
    d.add_argument(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="how many replicas to run (default: %(default)s)",
    )
    d.add_argument(
        "--batch-size",
        type=int,
        default=-1,
        metavar="N",
        help="the largest batch a replica gets (default: the query frontend's choice)",
    )
    d.add_argument(
        "--pkg",
        action="append",
        metavar="REQ",
        help="a pip requirement the replicas need (e.g. scikit-learn), repeatable",
    )
    scale = add("scale", verbs.cmd_scale, "set the number of replicas of a model version", waiting)
    scale.add_argument("model", help="the model's name")
    scale.add_argument("num_replicas", type=int, metavar="N", help="how many replicas to run")
    scale.add_argument("--version", help="which version (default: the current one)")
    set_version = add(
        "set-version", verbs.cmd_set_version, "make a version current (roll back)", waiting
    )
    set_version.add_argument("model", help="the model's name")
    set_version.add_argument("version", help="the version to make current")


def _policy_and_key_verbs(add: Add, listing: argparse.ArgumentParser) -> None:
    set_policy = add("set-policy", verbs.cmd_set_policy, "set an app's selection policy, live")
    set_policy.add_argument("app", help="the application's name")
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
        "policy-state", verbs.cmd_policy_state, "what an app's selection policy learned", listing
    )
    policy_state.add_argument("app", help="the application's name")
    policy_state.add_argument("--uid", help="what this user sees (their feedback included)")
    for p in (set_policy, policy_state):
        p.add_argument(
            "--stage",
            type=positive_int,
            default=1,
            metavar="N",
            help="which stage of a pipeline app, from 1 (default: 1, the app's links)",
        )
    create_key = add("create-api-key", verbs.cmd_create_api_key, "make an API key for an app")
    create_key.add_argument("app", help="the application's name")
    revoke_key = add("revoke-api-key", verbs.cmd_revoke_api_key, "revoke one of an app's API keys")
    revoke_key.add_argument("app", help="the application's name")
    revoke_key.add_argument(
        "key",
        metavar="SHA256",
        help="the key's sha256 (printed when it was made), or '-' to read the key itself "
        "from stdin (never pass a key on the command line: ps shows it to everyone)",
    )
    add(
        "rotate-admin-token",
        verbs.cmd_rotate_admin_token,
        "replace the cluster's admin token",
    )


def _watch_verbs(add: Add) -> None:
    t = add(
        "top",
        top.cmd_top,
        "a live view of throughput, latency, defaults, replicas and the cache (Ctrl-C ends it)",
    )
    t.add_argument(
        "--interval",
        type=positive_seconds,
        default=top.DEFAULT_INTERVAL_S,
        metavar="SECONDS",
        help="how often to refresh (default: %(default)s)",
    )
    t.add_argument(
        "--once",
        action="store_true",
        help="print one frame and exit (what it does anyway when stdout is not a terminal)",
    )
    t.add_argument(
        "--app", metavar="NAME", help="also show this app's policy weights and recent defaults"
    )
    t.add_argument(
        "--window",
        type=window_seconds,
        default=OVERVIEW_WINDOW_S,
        metavar="SECONDS",
        help=f"how far back the trends go, {MIN_WINDOW_S} to {MAX_WINDOW_S} (default: %(default)s)",
    )


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a command line that parsed, or None."""
    wrong = managers.misplaced_option(args)
    if wrong:
        return wrong
    if args.command == "deploy":
        if args.output_name is not None and args.onnx is None:
            return "--output-name goes with --onnx"
        if args.path and args.onnx is not None:
            return "--path goes with --func or --pickle (an ONNX file runs no code of yours)"
    if (wrong := pipeline.usage_problem(args)) is not None:
        return wrong
    if args.command == "start" and bool(args.tls_certfile) != bool(args.tls_keyfile):
        return "--tls-certfile and --tls-keyfile go together"
    return None
