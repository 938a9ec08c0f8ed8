"""Query frontend configuration: built once in the entry point and passed in."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field


def _default_frontend_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Config:
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "schooner"
    host: str = "127.0.0.1"
    port: int = 1337
    rpc_host: str = "127.0.0.1"
    rpc_port: int = 7000
    # Also bind the RPC ROUTER on this unix socket path (``ipc://``), for replicas on
    # this host; "" for TCP only. Its directory must be private (0700).
    rpc_ipc: str = ""
    # Also serve RPC on this unix socket with the direct transport (no ZeroMQ, no CURVE:
    # only this user's processes may connect), for replicas on this host; "" for none.
    # Its directory must be this user's, mode 0700 (``rpc.unix_listener``).
    rpc_unix: str = ""
    # Largest request body accepted; larger bodies get 413.
    max_body_bytes: int = 10 * 1024 * 1024
    # Most inputs one request may carry in "input_batch"; more get 413.
    max_inputs_per_request: int = 10_000
    # Interval of heartbeats to replicas (they send theirs 3 times as often). A replica
    # silent, or stuck on a batch past its deadline, for one interval leaves rotation
    # until it answers; one silent for 3 intervals is removed.
    heartbeat_ms: int = 250
    # Cap on the batch sent to one replica when the model version sets none.
    max_batch_size: int = 64
    # Batches a replica may hold at once; 2 overlaps transfer and (de)serialisation with
    # compute, at the cost of a smaller batch budget (SLO / (1 + this)).
    max_inflight_batches: int = 1
    # Queries waiting per model version beyond which new queries get 503 + Retry-After.
    max_queue_per_model: int = 10_000
    # Seconds a client has to send a request's headers (from the request's first byte,
    # or the connection's opening), and then its body; past them its connection is
    # closed (model_container/http_deadlines.py). Idle keep-alive connections close after 5 s.
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    # Bytes of model outputs the prediction cache may hold; 0 turns caching off.
    cache_max_bytes: int = 64 * 1024 * 1024
    log_level: str = "INFO"
    frontend_id: str = field(default_factory=_default_frontend_id)
    # The directory of the cluster's credentials (``model_container.credentials``):
    # /status and /metrics on the query port need the admin token checked against it.
    secrets_dir: str | None = None
    # HTTPS: the server's certificate (chain) and private key, PEM files; both or neither.
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    # A port serving only GET /metrics, without authentication, on ``host``; 0: none.
    metrics_port: int = 0
    # Plain ZeroMQ instead of CURVE on the RPC port (``rpc.auth``): only to measure.
    insecure_rpc: bool = False
    # The least batch timeout derived for a model version that sets none (10 x the
    # tightest SLO of its apps): a batch running longer has its replica restarted.
    batch_timeout_floor_s: float = 1.0
    # How long an input that hung or crashed replicas twice is refused with 422, and how
    # many suspect inputs are remembered at most.
    quarantine_s: float = 600.0
    quarantine_max_inputs: int = 10_000
    # Bytes of request bodies held at once (read, parsed, or waiting for their answer),
    # over all apps; a body that does not fit gets 503 + Retry-After before it is read.
    # One app may hold half (at least one largest body): http/budget.py.
    max_body_bytes_in_flight: int = 64 * 1024 * 1024
    # Bodies over this many bytes are parsed in worker processes, off the event loop
    # (http/offload.py); this many workers (0: parse every body inline).
    parse_offload_bytes: int = 256 * 1024
    parse_workers: int = 1
    # Bind the HTTP port with SO_REUSEPORT, so that several frontends share it.
    reuse_port: bool = False
    # SIGTERM: seconds to answer the requests already accepted before cancelling them.
    drain_timeout_s: float = 30.0
    # The share of predict/update requests the access log records (0..1); errors and
    # answers with a default are always recorded (observability/access_log.py).
    access_log_sample: float = 1.0
    # Access-log lines a second at most, errors and defaults included (0: no cap).
    access_log_max_per_s: int = 1000

    @property
    def rpc_bind_address(self) -> str:
        return f"tcp://{self.rpc_host}:{self.rpc_port}"

    @property
    def rpc_extra_binds(self) -> tuple[str, ...]:
        return (f"ipc://{self.rpc_ipc}",) if self.rpc_ipc else ()
