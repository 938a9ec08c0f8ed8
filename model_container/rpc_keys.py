"""The CURVE keys that authenticate and encrypt the RPC connections (ZeroMQ CURVE).

The query frontends' ROUTER is a CURVE server with the cluster's ``rpc-server`` key
pair and admits only clients presenting the ``rpc-client`` public key (a ZAP handler,
``query_frontend.rpc.auth``); replicas connect with the ``rpc-client`` key pair and pin
the server's public key, so neither end talks to a process without the cluster's keys.
The keys come from the secrets directory the container manager wrote
(``credentials``). Without one, frontends and replicas refuse to start, unless told
``--insecure-rpc`` (``SCHOONER_INSECURE_RPC=1``): plain, unauthenticated ZeroMQ, for
measuring what CURVE costs and nothing else. Key values are never logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import zmq
from zmq.utils import z85

from model_container import credentials as cred
from model_container.credentials import CredentialError

logger = logging.getLogger(__name__)

INSECURE_RPC_ENV: Final = "SCHOONER_INSECURE_RPC"
# The ZAP domain of the frontends' ROUTER; the authenticator answers for it alone.
ZAP_DOMAIN: Final = "schooner-rpc"

_INSECURE_WARNING = (
    "RPC runs WITHOUT authentication or encryption (--insecure-rpc / %s): any process "
    "that reaches the RPC port can register as a replica and read queries; use only to "
    "measure, never in production"
)


def insecure_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Whether ``SCHOONER_INSECURE_RPC`` asks for plain RPC (``1``, ``true`` or ``yes``)."""
    value = (os.environ if env is None else env).get(INSECURE_RPC_ENV, "")
    return value.strip().lower() in {"1", "true", "yes"}


def warn_insecure() -> None:
    logger.warning(_INSECURE_WARNING, INSECURE_RPC_ENV)


def _key(directory: str, name: str) -> bytes:
    value = cred.read(directory, name).encode("ascii", "replace")
    try:
        ok = len(value) == 40 and len(z85.decode(value)) == 32
    except (ValueError, KeyError, TypeError, IndexError):
        ok = False
    if not ok:
        raise CredentialError(
            f"the credential file {os.path.join(directory, name)} does not hold a CURVE key "
            "(40 characters of Z85): let the container manager rewrite it"
        )
    return value


def _no_dir(who: str) -> CredentialError:
    return CredentialError(
        f"{who} needs the cluster's RPC keys and no secrets directory was given: pass "
        f"--secrets-dir (or ${cred.SECRETS_DIR_ENV}) the directory the container manager "
        f"wrote (or, only to measure, --insecure-rpc / ${INSECURE_RPC_ENV}=1)"
    )


@dataclass(frozen=True, slots=True, repr=False)
class ClientKeys:
    """A replica's side: its key pair and the frontends' public key it pins."""

    public: bytes
    secret: bytes
    server_public: bytes

    def __repr__(self) -> str:
        return "ClientKeys(<hidden>)"

    @classmethod
    def load(cls, secrets_dir: str | None) -> ClientKeys:
        """The keys in ``secrets_dir``; ``CredentialError`` names what is missing."""
        if secrets_dir is None:
            raise _no_dir("a replica")
        return cls(
            public=_key(secrets_dir, cred.RPC_CLIENT_PUBLIC),
            secret=_key(secrets_dir, cred.RPC_CLIENT_SECRET),
            server_public=_key(secrets_dir, cred.RPC_SERVER_PUBLIC),
        )

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` (before it connects) a CURVE client of the frontends."""
        socket.setsockopt(zmq.CURVE_SERVERKEY, self.server_public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, self.public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.secret)


@dataclass(frozen=True, slots=True, repr=False)
class ServerKeys:
    """A frontend's side: its key pair and the one client public key it admits."""

    public: bytes
    secret: bytes
    client_public: bytes

    def __repr__(self) -> str:
        return "ServerKeys(<hidden>)"

    @classmethod
    def load(cls, secrets_dir: str | None) -> ServerKeys:
        if secrets_dir is None:
            raise _no_dir("the query frontend")
        return cls(
            public=_key(secrets_dir, cred.RPC_SERVER_PUBLIC),
            secret=_key(secrets_dir, cred.RPC_SERVER_SECRET),
            client_public=_key(secrets_dir, cred.RPC_CLIENT_PUBLIC),
        )

    def apply(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` (before it binds) a CURVE server whose clients ZAP checks."""
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_SECRETKEY, self.secret)
        socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode("ascii"))
