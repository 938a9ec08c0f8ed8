"""The management frontend's configuration, built once in the entry point and passed in."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from management_frontend.state.keys import DEFAULT_PREFIX
from management_frontend.state.rules import DEFAULT_MAX_REPLICAS

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 1338

_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the service needs; no I/O happens until the app's lifespan starts."""

    redis_url: str = DEFAULT_REDIS_URL
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    key_prefix: str = DEFAULT_PREFIX
    log_level: str = "INFO"
    # Per-command socket timeouts of the Redis client.
    redis_timeout_s: float = 5.0
    # How long startup waits for Redis to answer PING before giving up.
    redis_wait_s: float = 30.0
    # How long a graceful shutdown lets in-flight requests finish.
    shutdown_timeout_s: float = 10.0
    # The directory of the cluster's credentials (``model_container.credentials``).
    secrets_dir: str | None = None
    # HTTPS: the server's certificate (chain) and private key, PEM files; both or neither.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # The most replicas of one model version a client may ask for.
    max_replicas: int = DEFAULT_MAX_REPLICAS
    # Seconds a client has to send a request's headers, then its body, before its
    # connection is closed (model_container/http_deadlines.py).
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check_tls(self.tls_certfile, self.tls_keyfile)
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"redis_url {self.redis_url!r} is not a Redis URL: "
                "use redis://HOST:PORT/DB, rediss://... or unix:///path/to/socket"
            )
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range: use 1..65535 (0 picks a free one)")
        if not _PREFIX_RE.fullmatch(self.key_prefix) or ":" in self.key_prefix:
            raise ValueError(
                f"key_prefix {self.key_prefix!r} is not usable: use letters, digits, '_', "
                "'.' and '-' (no ':' or spaces)"
            )
        if self.log_level.upper() not in _LOG_LEVELS:
            raise ValueError(
                f"log_level {self.log_level!r} is not known: use one of {', '.join(_LOG_LEVELS)}"
            )
        if self.max_replicas < 0:
            raise ValueError(f"max_replicas must be >= 0, got {self.max_replicas}")
        for name in ("redis_timeout_s", "redis_wait_s", "shutdown_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    @property
    def scheme(self) -> str:
        return "https" if self.tls_certfile else "http"

    @property
    def redis_url_redacted(self) -> str:
        """The Redis URL without its password, for logs and error messages."""
        parts = urlsplit(self.redis_url)
        if parts.password is None:
            return self.redis_url
        user = parts.username or ""
        netloc = f"{user}:***@{parts.hostname or ''}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def log_level_number(self) -> int:
        return logging.getLevelNamesMapping()[self.log_level.upper()]


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """``ValueError`` unless both TLS files are given, or neither."""
    if bool(certfile) != bool(keyfile):
        raise ValueError(
            "TLS needs both --tls-certfile and --tls-keyfile (the certificate and its "
            "private key, PEM files); pass both, or neither to serve plain HTTP"
        )
