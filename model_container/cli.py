"""The model container's command line: ``python -m model_container``.

Every flag can also come from the environment (Docker and Kubernetes pass environment
variables), the flag winning when both are set::

    --bundle DIR            SCHOONER_BUNDLE          the model bundle directory
    --bundle-sha256 HEX     SCHOONER_BUNDLE_SHA256   the digest recorded at deploy (below)
    --frontend ADDR         SCHOONER_FRONTEND        e.g. tcp://query-frontend:7000 (below)
    --name NAME             SCHOONER_MODEL_NAME
    --version VERSION       SCHOONER_MODEL_VERSION
    --input-type TYPE       SCHOONER_INPUT_TYPE      default: the bundle's
    --replica-id ID         SCHOONER_REPLICA_ID      default: <hostname>-<pid>
    --heartbeat-ms N        SCHOONER_HEARTBEAT_MS    interval to request (frontend decides)
    --metrics-port PORT     SCHOONER_METRICS_PORT    serve GET /metrics; default 0: off
    --metrics-host HOST     SCHOONER_METRICS_HOST    default: 127.0.0.1 (0.0.0.0 in images)
    --log-level LEVEL       SCHOONER_LOG_LEVEL       default: INFO
    --discovery-interval-s S  SCHOONER_DISCOVERY_INTERVAL_S  re-resolve dns+tcp names; 5
    --secrets-dir DIR       SCHOONER_SECRETS_DIR     the replica's credentials (``credentials``)
    --insecure-rpc          SCHOONER_INSECURE_RPC=1  plain ZeroMQ, no CURVE: only to measure

``--frontend`` takes one frontend, or several that the replica serves at once (one
process, the model loaded once, one registration per frontend)::

    tcp://HOST:PORT                        one frontend
    tcp://A:7000,tcp://B:7000              each of a list (or repeat --frontend)
    ipc:///PATH                            ZeroMQ over a unix socket (same host)
    unix:///PATH                           the direct unix-socket transport (same host,
                                           no libzmq threads; the listener's uid must
                                           be ours: ``model_container.unix_link``)
    dns+tcp://NAME:PORT                    every IPv4/IPv6 address NAME resolves to, at
                                           start and every --discovery-interval-s: on
                                           Kubernetes, a headless Service of frontends

(entries of every kind may be mixed in one list; see ``model_container.discovery``).

Metrics are off by default so that several replicas on one host do not fight over a
port; the local container manager gives each replica a port of its own.

Before it reads anything from the bundle, the container computes its digest
(``model_container.bundle.bundle_digest``) and refuses to start unless it equals
``--bundle-sha256``: a bundle changed after deploy is never unpickled or imported. Every
container manager passes the digest recorded with the model version. Without one the
container refuses too; ``--no-verify-bundle`` (a flag only, never the environment)
skips the check, for developing a bundle by hand.

Exit status: 0 after SIGTERM/SIGINT, 2 when the configuration is invalid, the bundle's
digest is missing or differs, the model cannot be loaded (a wrong Python version, a
missing module, a missing file) or the metrics port cannot be opened; the reason is
logged as one paragraph, without a traceback, so a crash-looping pod says why.
Three more statuses ask the replica's manager for a fresh process (``protocol``):
75 when a frontend sent RESTART (a batch ran past its timeout, or the replica was
ejected for failing while its siblings succeeded), 76 when the model raised
MemoryError (the memory limit), each after GOODBYE to every frontend saying why; and 1
when the batch watchdog fired (a batch ran well past its timeout while no Python thread
could act: the model held the GIL), after every thread's traceback on stderr.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import socket
from collections.abc import Sequence

from model_container import tracing
from model_container.bundle import (
    SHA256_RE,
    BundleError,
    load_predict_function,
    read_bundle_info,
    verify_bundle,
)
from model_container.credentials import SECRETS_DIR_ENV, CredentialError
from model_container.discovery import DEFAULT_DISCOVERY_INTERVAL_S, parse_frontends
from model_container.logconfig import configure_logging
from model_container.metrics import MetricsServerError
from model_container.protocol import InputType
from model_container.rpc_keys import INSECURE_RPC_ENV, ClientKeys, insecure_from_env
from model_container.server import ContainerConfig, ModelContainer

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CONFIG = 2

_ENV = {
    "bundle": "SCHOONER_BUNDLE",
    "bundle_sha256": "SCHOONER_BUNDLE_SHA256",
    "frontend": "SCHOONER_FRONTEND",
    "name": "SCHOONER_MODEL_NAME",
    "version": "SCHOONER_MODEL_VERSION",
    "input_type": "SCHOONER_INPUT_TYPE",
    "replica_id": "SCHOONER_REPLICA_ID",
    "heartbeat_ms": "SCHOONER_HEARTBEAT_MS",
    "metrics_port": "SCHOONER_METRICS_PORT",
    "metrics_host": "SCHOONER_METRICS_HOST",
    "log_level": "SCHOONER_LOG_LEVEL",
    "discovery_interval_s": "SCHOONER_DISCOVERY_INTERVAL_S",
    "secrets_dir": SECRETS_DIR_ENV,
}
_REQUIRED = ("bundle", "frontend", "name", "version")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m model_container",
        description="Serve a Schooner model bundle to a query frontend.",
    )
    parser.add_argument("--bundle", help=f"model bundle directory (${_ENV['bundle']})")
    parser.add_argument(
        "--bundle-sha256",
        help="the sha256 the bundle was deployed with; the container refuses any other "
        f"(${_ENV['bundle_sha256']})",
    )
    parser.add_argument(
        "--no-verify-bundle",
        action="store_true",
        help="load the bundle without checking its digest (development only)",
    )
    parser.add_argument(
        "--frontend",
        action="append",
        help="frontend RPC address: tcp://HOST:PORT, a comma-separated list of those, or "
        "dns+tcp://NAME:PORT for every address of NAME; may be repeated "
        f"(${_ENV['frontend']})",
    )
    parser.add_argument("--name", help=f"model name (${_ENV['name']})")
    parser.add_argument("--version", help=f"model version (${_ENV['version']})")
    parser.add_argument(
        "--input-type",
        choices=[t.value for t in InputType],
        help=f"input type, default the bundle's (${_ENV['input_type']})",
    )
    parser.add_argument("--replica-id", help=f"replica id (${_ENV['replica_id']})")
    parser.add_argument(
        "--heartbeat-ms", type=int, help=f"heartbeat interval to request (${_ENV['heartbeat_ms']})"
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        help=f"serve Prometheus metrics on this port, default 0: off (${_ENV['metrics_port']})",
    )
    parser.add_argument(
        "--metrics-host",
        help=f"address the metrics endpoint listens on, default 127.0.0.1 "
        f"(${_ENV['metrics_host']})",
    )
    parser.add_argument(
        "--discovery-interval-s",
        type=float,
        help="seconds between DNS resolutions of dns+tcp:// frontends, default "
        f"{DEFAULT_DISCOVERY_INTERVAL_S:g} (${_ENV['discovery_interval_s']})",
    )
    parser.add_argument(
        "--secrets-dir",
        help="directory of the replica's credentials, written by the container manager "
        f"(${_ENV['secrets_dir']})",
    )
    parser.add_argument(
        "--insecure-rpc",
        action="store_true",
        help="connect without CURVE (no authentication, no encryption): only to measure "
        f"what CURVE costs, never in production (${INSECURE_RPC_ENV}=1)",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        type=str.upper,
        help=f"log level, default INFO (${_ENV['log_level']})",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse flags, filling what is missing from the environment."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frontend is not None:  # repeated --frontend: one list
        args.frontend = ",".join(args.frontend)
    for dest, env in _ENV.items():
        if getattr(args, dest) is None and os.environ.get(env):
            setattr(args, dest, os.environ[env])
    missing = [f"--{d.replace('_', '-')} (${_ENV[d]})" for d in _REQUIRED if not getattr(args, d)]
    if missing:
        parser.error(f"missing {', '.join(missing)}")
    args.insecure_rpc = args.insecure_rpc or insecure_from_env()
    try:
        parse_frontends(str(args.frontend))
    except ValueError as exc:
        parser.error(str(exc))
    if args.bundle_sha256 and not SHA256_RE.fullmatch(args.bundle_sha256):
        parser.error(f"--bundle-sha256 (${_ENV['bundle_sha256']}) must be 64 lowercase hex digits")
    if args.input_type is not None and args.input_type not in {t.value for t in InputType}:
        parser.error(f"unknown input type {args.input_type!r} in ${_ENV['input_type']}")
    try:
        args.heartbeat_ms = int(args.heartbeat_ms or 0)
    except ValueError:
        parser.error(f"${_ENV['heartbeat_ms']} must be an integer")
    if args.heartbeat_ms < 0:
        parser.error("--heartbeat-ms must not be negative")
    try:
        args.metrics_port = int(args.metrics_port or 0)
    except ValueError:
        parser.error(f"${_ENV['metrics_port']} must be an integer")
    if not 0 <= args.metrics_port < 65536:
        parser.error("--metrics-port must be in 0..65535 (0: no metrics endpoint)")
    args.metrics_host = args.metrics_host or "127.0.0.1"
    try:
        interval = args.discovery_interval_s
        args.discovery_interval_s = (
            DEFAULT_DISCOVERY_INTERVAL_S if interval is None else float(interval)
        )
    except ValueError:
        parser.error(f"${_ENV['discovery_interval_s']} must be a number of seconds")
    if not 0 < args.discovery_interval_s < math.inf:
        parser.error("--discovery-interval-s must be a positive number of seconds")
    args.log_level = str(args.log_level or "INFO").upper()
    if args.log_level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        parser.error(f"unknown log level {args.log_level!r}")
    if not args.replica_id:
        args.replica_id = f"{socket.gethostname()}-{os.getpid()}"
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(args.log_level, request_ids=True)
    if not args.insecure_rpc:
        try:  # before loading the model: a replica without keys could never register
            ClientKeys.load(args.secrets_dir)
        except CredentialError as exc:
            logger.error("cannot start: %s", exc)
            return EXIT_CONFIG
    try:
        _check_digest(args)
        info = read_bundle_info(args.bundle)
        if args.input_type is not None and InputType(args.input_type) != info.input_type:
            raise BundleError(
                f"the bundle's input type is '{info.input_type}' but the container was "
                f"started with '{args.input_type}'; re-deploy with matching input types"
            )
        predict = load_predict_function(args.bundle)
    except BundleError as exc:
        logger.error("cannot load the model from %s: %s", args.bundle, exc)
        return EXIT_CONFIG
    except Exception as exc:
        logger.error("cannot load the model from %s: %s: %s", args.bundle, type(exc).__name__, exc)
        logger.debug("details", exc_info=exc)
        return EXIT_CONFIG
    config = ContainerConfig(
        frontend=args.frontend,
        model_name=args.name,
        model_version=args.version,
        input_type=info.input_type,
        replica_id=args.replica_id,
        heartbeat_ms=args.heartbeat_ms,
        metrics_host=args.metrics_host,
        metrics_port=args.metrics_port,
        discovery_interval_s=args.discovery_interval_s,
        secrets_dir=args.secrets_dir,
        insecure_rpc=args.insecure_rpc,
    )
    tracing.setup(args.name, args.version, args.replica_id)  # if OTEL_* says so
    try:
        ModelContainer(config, predict).run()
    except MetricsServerError as exc:
        logger.error("%s", exc)
        return EXIT_CONFIG
    finally:
        tracing.shutdown()
    return EXIT_OK


def _check_digest(args: argparse.Namespace) -> None:
    """Refuse a bundle that is not the one deployed, before anything is read from it."""
    if args.bundle_sha256:
        verify_bundle(args.bundle, args.bundle_sha256)
        logger.info("bundle %s has the deployed sha256 %s", args.bundle, args.bundle_sha256)
    elif args.no_verify_bundle:
        logger.warning(
            "loading the bundle at %s without checking its digest (--no-verify-bundle): "
            "whoever can write there can run code here",
            args.bundle,
        )
    else:
        raise BundleError(
            f"no bundle digest was given, so the bundle is not loaded: pass --bundle-sha256 "
            f"(${_ENV['bundle_sha256']}) with the sha256 it was deployed with (python -m "
            "model_container.bundle DIR prints it), or --no-verify-bundle to develop "
            "without the check"
        )
