"""The process entry point: ``python -m management_frontend`` (see ``__main__.py``).

Builds the ``Config`` from arguments (each with an environment fallback), configures
logging, and serves the app with uvicorn, which stops accepting on SIGINT/SIGTERM,
lets in-flight requests finish for ``--shutdown-timeout`` seconds, then runs the
lifespan's cleanup.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Mapping, Sequence

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from management_frontend.app import create_app
from management_frontend.config import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_REDIS_URL, Config
from management_frontend.state.keys import DEFAULT_PREFIX
from management_frontend.state.rules import DEFAULT_MAX_REPLICAS
from model_container.credentials import SECRETS_DIR_ENV
from model_container.http_deadlines import deadline_protocol
from model_container.logconfig import configure_logging

logger = logging.getLogger(__name__)

# Flag -> environment variable consulted when the flag is not given.
ENV = {
    "redis_url": "SCHOONER_REDIS_URL",
    "host": "SCHOONER_MANAGEMENT_HOST",
    "port": "SCHOONER_MANAGEMENT_PORT",
    "key_prefix": "SCHOONER_KEY_PREFIX",
    "log_level": "SCHOONER_LOG_LEVEL",
    "redis_wait": "SCHOONER_REDIS_WAIT",
    "shutdown_timeout": "SCHOONER_SHUTDOWN_TIMEOUT",
    "secrets_dir": SECRETS_DIR_ENV,
    "tls_certfile": "SCHOONER_TLS_CERTFILE",
    "tls_keyfile": "SCHOONER_TLS_KEYFILE",
    "max_replicas": "SCHOONER_MAX_REPLICAS",
    "header_timeout": "SCHOONER_HEADER_TIMEOUT",
    "body_timeout": "SCHOONER_BODY_TIMEOUT",
}


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m management_frontend",
        description="Schooner management frontend: the REST admin API over Redis.",
    )

    def default(name: str, fallback: str) -> str:
        return env.get(ENV[name], fallback)

    parser.add_argument(
        "--redis-url",
        default=default("redis_url", DEFAULT_REDIS_URL),
        help=f"Redis holding the cluster state (env {ENV['redis_url']}; default %(default)s)",
    )
    parser.add_argument(
        "--host",
        default=default("host", DEFAULT_HOST),
        help=f"address to listen on (env {ENV['host']}; default %(default)s)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=default("port", str(DEFAULT_PORT)),
        help=f"port to listen on (env {ENV['port']}; default %(default)s)",
    )
    parser.add_argument(
        "--key-prefix",
        default=default("key_prefix", DEFAULT_PREFIX),
        help=f"prefix of every Redis key (env {ENV['key_prefix']}; default %(default)s)",
    )
    parser.add_argument(
        "--log-level",
        default=default("log_level", "INFO"),
        help=f"DEBUG, INFO, WARNING or ERROR (env {ENV['log_level']}; default %(default)s)",
    )
    parser.add_argument(
        "--redis-wait",
        type=float,
        default=default("redis_wait", "30"),
        help="seconds to wait for Redis at startup before exiting "
        f"(env {ENV['redis_wait']}; default %(default)s)",
    )
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=default("shutdown_timeout", "10"),
        help="seconds in-flight requests get on shutdown "
        f"(env {ENV['shutdown_timeout']}; default %(default)s)",
    )
    parser.add_argument(
        "--secrets-dir",
        default=env.get(ENV["secrets_dir"]),
        help="directory of the cluster's credentials, written by the container manager "
        f"(env {ENV['secrets_dir']})",
    )
    parser.add_argument(
        "--tls-certfile",
        default=env.get(ENV["tls_certfile"]),
        help=f"serve HTTPS with this PEM certificate (chain) (env {ENV['tls_certfile']})",
    )
    parser.add_argument(
        "--tls-keyfile",
        default=env.get(ENV["tls_keyfile"]),
        help=f"the certificate's PEM private key (env {ENV['tls_keyfile']})",
    )
    parser.add_argument(
        "--max-replicas",
        type=int,
        default=default("max_replicas", str(DEFAULT_MAX_REPLICAS)),
        help="the most replicas of one model version a client may ask for "
        f"(env {ENV['max_replicas']}; default %(default)s)",
    )
    parser.add_argument(
        "--header-timeout",
        type=float,
        default=default("header_timeout", "10"),
        help="seconds a client has to send a request's headers before its connection is "
        f"closed (env {ENV['header_timeout']}; default %(default)s)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=default("body_timeout", "30"),
        help="seconds a client has to send a request's body once its headers arrived "
        f"(env {ENV['body_timeout']}; default %(default)s)",
    )
    return parser


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The ``Config`` for these arguments; exits with a usage message on a bad value."""
    parser = build_parser(os.environ if env is None else env)
    args = parser.parse_args(argv)
    try:
        config = Config(
            redis_url=args.redis_url,
            host=args.host,
            port=int(args.port),
            key_prefix=args.key_prefix,
            log_level=args.log_level.upper(),
            redis_wait_s=float(args.redis_wait),
            shutdown_timeout_s=float(args.shutdown_timeout),
            secrets_dir=args.secrets_dir,
            tls_certfile=args.tls_certfile,
            tls_keyfile=args.tls_keyfile,
            max_replicas=int(args.max_replicas),
            header_timeout_s=float(args.header_timeout),
            body_timeout_s=float(args.body_timeout),
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not config.secrets_dir:
        parser.error(
            "--secrets-dir is required: the management API answers only requests carrying "
            "the cluster's admin token, checked against admin-token.sha256 in that directory; "
            "start the cluster with a container manager (Connection.start(), `schooner start`), "
            f"which writes it, or pass the directory it wrote (env {ENV['secrets_dir']})"
        )
    return config


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, then shut down gracefully.

    uvicorn re-raises the signal after its shutdown, so a stopped service reports it
    in its exit status (-15 for SIGTERM); it exits 3 when startup fails (Redis
    unreachable, schema too new) and 2 on bad arguments.
    """
    config = parse_config(argv)
    configure_logging(config.log_level)
    logger.info("starting on %s://%s:%d", config.scheme, config.host, config.port)
    uvicorn.run(
        create_app(config),
        host=config.host,
        port=config.port,
        log_config=None,
        log_level=config.log_level_number,
        http=deadline_protocol(HttpToolsProtocol, config.header_timeout_s, config.body_timeout_s),
        ws="none",
        lifespan="on",
        server_header=False,
        # uvicorn's default believes X-Forwarded-For from 127.0.0.1, where we listen: any
        # local client could then pick its address (login throttle, logs). Behind a
        # proxy the address is the proxy's (docs/dashboard.md).
        proxy_headers=False,
        timeout_graceful_shutdown=max(1, round(config.shutdown_timeout_s)),
        ssl_certfile=config.tls_certfile,
        ssl_keyfile=config.tls_keyfile,
    )
    return 0
