"""Who may connect to the RPC port: ZeroMQ's ZAP, answered on the frontend's event loop.

The ROUTER is a CURVE server (``model_container.rpc_keys.ServerKeys``): a client must
prove it holds the secret key of the public key it presents, and libzmq asks the ZAP
handler bound on ``inproc://zeromq.zap.01`` of the same context whether that public key
may in. ``RpcAuthenticator`` (pyzmq's asyncio authenticator) admits exactly the
cluster's ``rpc-client`` public key; any other key, and any client without CURVE, fails
the handshake before a single message reaches the frontend. It runs only during
handshakes, so it costs nothing per message. Refusals are logged, at most one line per
``REFUSAL_LOG_INTERVAL_S``, with how many there were.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Final

import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator

from model_container.rpc_keys import ZAP_DOMAIN, ServerKeys

logger = logging.getLogger(__name__)

REFUSAL_LOG_INTERVAL_S: Final = 10.0


class RefusalLog:
    """Warn about refused connections without letting a flood of them flood the log."""

    def __init__(self) -> None:
        self._unreported = 0
        self._last = -float("inf")
        # Every refusal since start (CURVE handshakes, ZAP, unix peers of another uid).
        self.total = 0

    def refused(self, why: str) -> None:
        self.total += 1
        self._unreported += 1
        now = time.monotonic()
        if now - self._last >= REFUSAL_LOG_INTERVAL_S:
            logger.warning(
                "refused %d RPC connection(s) (%s): only replicas holding this cluster's "
                "rpc-client key (or, on the unix socket, running as this user) may connect",
                self._unreported,
                why,
            )
            self._unreported = 0
            self._last = now


class _OneKey:
    """The ZAP credentials provider: the cluster's client public key, and no other."""

    def __init__(self, client_public: bytes, refusals: RefusalLog) -> None:
        self._client_public = client_public
        self._refusals = refusals

    def callback(self, domain: str, key: bytes) -> bool:
        allowed = domain == ZAP_DOMAIN and hmac.compare_digest(key, self._client_public)
        if not allowed:
            self._refusals.refused("an unknown CURVE key")
        return allowed


class RpcAuthenticator:
    """Bind the context's ZAP handler (before the ROUTER binds) and answer it."""

    def __init__(self, ctx: zmq.asyncio.Context, keys: ServerKeys, refusals: RefusalLog) -> None:
        self._auth = AsyncioAuthenticator(ctx, log=logging.getLogger("zmq.auth"))
        self._auth.configure_curve_callback(ZAP_DOMAIN, _OneKey(keys.client_public, refusals))

    def start(self) -> None:
        """Start answering; call from the running event loop."""
        self._auth.start()

    def stop(self) -> None:
        self._auth.stop()
