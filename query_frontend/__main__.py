"""Entry point: ``python -m query_frontend --redis-url URL --port 1337 --rpc-port 7000``."""

from __future__ import annotations

import argparse
import os
import socket
import sys

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from model_container.credentials import SECRETS_DIR_ENV, CredentialError
from model_container.http_deadlines import deadline_protocol
from model_container.logconfig import configure_logging
from model_container.rpc_keys import INSECURE_RPC_ENV, insecure_from_env
from query_frontend.app import create_app
from query_frontend.config import Config


def parse_args(argv: list[str] | None = None) -> Config:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="python -m query_frontend", description=__doc__)
    p.add_argument("--redis-url", default=env("SCHOONER_REDIS_URL", Config.redis_url))
    p.add_argument("--key-prefix", default=env("SCHOONER_KEY_PREFIX", Config.key_prefix))
    p.add_argument("--host", default=env("SCHOONER_QUERY_HOST", Config.host))
    p.add_argument("--port", type=int, default=int(env("SCHOONER_QUERY_PORT", Config.port)))
    p.add_argument("--rpc-host", default=env("SCHOONER_RPC_HOST", Config.rpc_host))
    p.add_argument("--rpc-port", type=int, default=int(env("SCHOONER_RPC_PORT", Config.rpc_port)))
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
        "--reuse-port",
        action="store_true",
        help="bind the query port with SO_REUSEPORT, to share it with other frontends",
    )
    a = p.parse_args(argv)
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
        reuse_port=a.reuse_port,
        **extra,
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    configure_logging(config.log_level, quiet=("uvicorn.access",))
    try:
        app = create_app(config)
    except CredentialError as exc:
        print(f"query frontend: cannot start: {exc}", file=sys.stderr)
        return 2
    where: dict[str, object] = {"host": config.host, "port": config.port}
    shared = _reuse_port_socket(config.host, config.port) if config.reuse_port else None
    if shared is not None:  # held here: closing it would close the fd uvicorn serves
        where = {"fd": shared.fileno()}
    uvicorn.run(
        app,
        **where,  # type: ignore[arg-type]
        loop="uvloop",
        http=deadline_protocol(HttpToolsProtocol, config.header_timeout_s, config.body_timeout_s),
        ws="none",  # an upgraded connection would leave the request deadlines behind
        log_config=None,
        access_log=False,
        # Per-request work nobody here needs: X-Forwarded-* rewriting and a Server header.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=config.tls_certfile,
        ssl_keyfile=config.tls_keyfile,
    )
    return 0


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    """The query port, bound with SO_REUSEPORT: the kernel spreads connections over every
    frontend that bound it so, and one exiting leaves the others serving."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    sys.exit(main())
