"""Entry point: ``python -m query_frontend --redis-url URL --port 1337 --rpc-port 7000``."""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

import uvicorn

from model_container.credentials import SECRETS_DIR_ENV, CredentialError
from model_container.discovery import IPC_PATH_MAX
from model_container.logconfig import configure_logging
from model_container.rpc_keys import INSECURE_RPC_ENV, insecure_from_env
from query_frontend.app import HANDLERS_BY_PREFIX, HANDLERS_BY_VERB, create_app
from query_frontend.config import Config
from query_frontend.http.protocol import frontend_protocol
from query_frontend.http.server import DrainingServer, listeners
from query_frontend.observability.access_log import configure_access_logger
from query_frontend.rpc.unix_listener import UnixSocketError, check_socket_path

logger = logging.getLogger("query_frontend")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def parse_args(argv: list[str] | None = None) -> Config:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m query_frontend", description=__doc__)
    p.add_argument("--redis-url", default=env("SCHOONER_REDIS_URL", Config.redis_url))
    p.add_argument("--key-prefix", default=env("SCHOONER_KEY_PREFIX", Config.key_prefix))
    p.add_argument("--host", default=env("SCHOONER_QUERY_HOST", Config.host))
    p.add_argument("--port", type=int, default=int(env("SCHOONER_QUERY_PORT", Config.port)))
    p.add_argument("--rpc-host", default=env("SCHOONER_RPC_HOST", Config.rpc_host))
    p.add_argument("--rpc-port", type=int, default=int(env("SCHOONER_RPC_PORT", Config.rpc_port)))
    p.add_argument(
        "--rpc-ipc",
        metavar="PATH",
        default=env("SCHOONER_RPC_IPC", Config.rpc_ipc),
        help="also serve RPC on this unix socket (ipc://PATH), for replicas on this host; "
        f"PATH at most {IPC_PATH_MAX} bytes, in a directory only this user can enter",
    )
    p.add_argument(
        "--rpc-unix",
        metavar="PATH",
        default=env("SCHOONER_RPC_UNIX", Config.rpc_unix),
        help="also serve RPC on this unix socket with the direct transport (framed "
        "messages, no ZeroMQ; only processes of this user may connect), for replicas on "
        f"this host (--frontend unix://PATH); PATH at most {IPC_PATH_MAX} bytes, in a "
        "directory of this user's with mode 0700",
    )
    p.add_argument("--max-body-bytes", type=int, default=Config.max_body_bytes)
    p.add_argument("--max-inputs-per-request", type=int, default=Config.max_inputs_per_request)
    p.add_argument("--heartbeat-ms", type=int, default=Config.heartbeat_ms)
    p.add_argument("--max-batch-size", type=int, default=Config.max_batch_size)
    p.add_argument("--max-inflight-batches", type=int, default=Config.max_inflight_batches)
    p.add_argument("--max-queue", type=int, default=Config.max_queue_per_model)
    p.add_argument("--cache-bytes", type=int, default=Config.cache_max_bytes)
    p.add_argument("--header-timeout", type=float, default=Config.header_timeout_s)
    p.add_argument("--body-timeout", type=float, default=Config.body_timeout_s)
    p.add_argument("--frontend-id", default=env("SCHOONER_FRONTEND_ID"))
    p.add_argument("--log-level", default=env("SCHOONER_LOG_LEVEL", "INFO"))
    p.add_argument("--secrets-dir", default=env(SECRETS_DIR_ENV))
    p.add_argument("--tls-certfile", default=env("SCHOONER_TLS_CERTFILE"), help="serve HTTPS")
    p.add_argument("--tls-keyfile", default=env("SCHOONER_TLS_KEYFILE"))
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("SCHOONER_QUERY_METRICS_PORT", Config.metrics_port)),
        help="also serve GET /metrics, without authentication, on this port (default: off; "
        "on the query port /metrics needs the admin token)",
    )
    p.add_argument(
        "--insecure-rpc",
        action="store_true",
        default=insecure_from_env(),
        help="serve RPC without CURVE (no authentication, no encryption): only to measure "
        f"what CURVE costs, never in production (env {INSECURE_RPC_ENV}=1)",
    )
    p.add_argument(
        "--batch-timeout-floor",
        type=float,
        default=Config.batch_timeout_floor_s,
        help="seconds: the least batch timeout derived for a model version (10 x its "
        "tightest SLO, unless the version sets its own); a batch running longer has its "
        "replica restarted",
    )
    p.add_argument(
        "--quarantine-seconds",
        type=float,
        default=Config.quarantine_s,
        help="how long an input that hung or crashed replicas twice is refused (422)",
    )
    p.add_argument(
        "--max-body-bytes-in-flight",
        type=int,
        default=int(
            env("SCHOONER_QUERY_MAX_BODY_BYTES_IN_FLIGHT", Config.max_body_bytes_in_flight)
        ),
        help="bytes of request bodies held at once; beyond: 503 with Retry-After "
        "(one app may hold half)",
    )
    p.add_argument("--parse-offload-bytes", type=int, default=Config.parse_offload_bytes,
                   help="bodies over this size are parsed in worker processes")  # fmt: skip
    p.add_argument("--parse-workers", type=int, default=Config.parse_workers,
                   help="worker processes parsing large bodies (0: parse inline)")  # fmt: skip
    p.add_argument(
        "--reuse-port",
        action="store_true",
        default=_env_flag("SCHOONER_QUERY_REUSE_PORT"),
        help="bind the HTTP port with SO_REUSEPORT, so that several query frontends share "
        "it (env SCHOONER_QUERY_REUSE_PORT=1)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=float(env("SCHOONER_QUERY_DRAIN_TIMEOUT", Config.drain_timeout_s)),
        help="on SIGTERM, seconds to answer the requests already accepted",
    )
    p.add_argument(
        "--access-log-sample",
        type=float,
        default=float(env("SCHOONER_ACCESS_LOG_SAMPLE", Config.access_log_sample)),
        metavar="RATE",
        help="share (0..1) of predict/update requests the access log records; errors and "
        "answers with a default are always recorded (env SCHOONER_ACCESS_LOG_SAMPLE)",
    )
    p.add_argument(
        "--access-log-max-per-s",
        type=int,
        default=int(env("SCHOONER_ACCESS_LOG_MAX_PER_S", Config.access_log_max_per_s)),
        metavar="N",
        help="access-log lines a second at most, errors and defaults included; the next "
        'line says how many were left out ("suppressed"); 0: no cap '
        "(env SCHOONER_ACCESS_LOG_MAX_PER_S)",
    )
    a = p.parse_args(argv)
    if not 0.0 <= a.access_log_sample <= 1.0:
        p.error(f"--access-log-sample must be within 0..1, got {a.access_log_sample}")
    if a.access_log_max_per_s < 0:
        p.error(f"--access-log-max-per-s must be >= 0 (0: no cap), got {a.access_log_max_per_s}")
    for flag, path in (("--rpc-ipc", a.rpc_ipc), ("--rpc-unix", a.rpc_unix)):
        if len(os.fsencode(path)) > IPC_PATH_MAX:
            p.error(f"{flag} {path!r} is longer than a unix socket path may be "
                    f"({IPC_PATH_MAX} bytes)")  # fmt: skip
    if not a.batch_timeout_floor > 0:
        p.error(f"--batch-timeout-floor must be > 0 seconds, got {a.batch_timeout_floor}")
    if not a.quarantine_seconds >= 0:
        p.error(f"--quarantine-seconds must be >= 0, got {a.quarantine_seconds}")
    if a.max_body_bytes_in_flight < a.max_body_bytes:
        p.error(
            f"--max-body-bytes-in-flight ({a.max_body_bytes_in_flight}) must be at least "
            f"--max-body-bytes ({a.max_body_bytes}), or the largest legal body never gets in"
        )
    if a.parse_workers < 0 or a.parse_offload_bytes < 0:
        p.error("--parse-workers and --parse-offload-bytes must be >= 0")
    if not a.drain_timeout > 0:
        p.error(f"--drain-timeout must be > 0 seconds, got {a.drain_timeout}")
    for flag, seconds in (
        ("--header-timeout", a.header_timeout),
        ("--body-timeout", a.body_timeout),
    ):
        if not seconds > 0:
            p.error(f"{flag} must be > 0 seconds, got {seconds}")
    extra = {"frontend_id": a.frontend_id} if a.frontend_id else {}
    if bool(a.tls_certfile) != bool(a.tls_keyfile):
        p.error("TLS needs both --tls-certfile and --tls-keyfile (PEM files), or neither")
    return Config(
        redis_url=a.redis_url,
        key_prefix=a.key_prefix,
        host=a.host,
        port=a.port,
        rpc_host=a.rpc_host,
        rpc_port=a.rpc_port,
        rpc_ipc=a.rpc_ipc,
        rpc_unix=a.rpc_unix,
        max_body_bytes=a.max_body_bytes,
        max_inputs_per_request=a.max_inputs_per_request,
        heartbeat_ms=a.heartbeat_ms,
        max_batch_size=a.max_batch_size,
        max_queue_per_model=a.max_queue,
        max_inflight_batches=a.max_inflight_batches,
        cache_max_bytes=a.cache_bytes,
        header_timeout_s=a.header_timeout,
        body_timeout_s=a.body_timeout,
        log_level=a.log_level.upper(),
        secrets_dir=a.secrets_dir,
        tls_certfile=a.tls_certfile,
        tls_keyfile=a.tls_keyfile,
        metrics_port=a.metrics_port,
        insecure_rpc=a.insecure_rpc,
        batch_timeout_floor_s=a.batch_timeout_floor,
        quarantine_s=a.quarantine_seconds,
        max_body_bytes_in_flight=a.max_body_bytes_in_flight,
        parse_offload_bytes=a.parse_offload_bytes,
        parse_workers=a.parse_workers,
        reuse_port=a.reuse_port,
        drain_timeout_s=a.drain_timeout,
        access_log_sample=a.access_log_sample,
        access_log_max_per_s=a.access_log_max_per_s,
        **extra,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    configure_logging(config.log_level, quiet=("uvicorn.access",))
    configure_access_logger()
    if config.rpc_unix:
        try:
            check_socket_path(config.rpc_unix)
        except UnixSocketError as exc:
            print(f"query frontend: cannot serve --rpc-unix: {exc}", file=sys.stderr)
            return 2
    try:
        app = create_app(config)
    except CredentialError as exc:
        print(f"query frontend: cannot start: {exc}", file=sys.stderr)
        return 2
    sockets = None
    if config.reuse_port:
        try:
            sockets = listeners(config.host, config.port)
        except OSError as exc:
            print(f"query frontend: cannot listen on {config.host}:{config.port}: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        logger.info("listening on %s:%d (SO_REUSEPORT)", config.host, config.port)
    server_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        loop="uvloop",
        # Our own HTTP/1.1 protocol (http/protocol.py); uvicorn runs the server around it.
        http=frontend_protocol(
            app,
            HANDLERS_BY_VERB,
            config.header_timeout_s,
            config.body_timeout_s,
            by_prefix=HANDLERS_BY_PREFIX,
        ),
        ws="none",
        log_config=None,
        access_log=False,
        # Per-request work nobody here needs: X-Forwarded-* rewriting and a Server header.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=math.ceil(config.drain_timeout_s),  # uvicorn takes whole s
        ssl_certfile=config.tls_certfile,
        ssl_keyfile=config.tls_keyfile,
    )
    server = DrainingServer(server_config, app.drain)
    server.run(sockets=sockets)
    if not server.started:
        return 3  # uvicorn's code for a server that did not start
    return 0


if __name__ == "__main__":
    sys.exit(main())
