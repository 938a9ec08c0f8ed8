"""The cluster's credentials, as files in a directory a component is given (``--secrets-dir``).

Every process of a cluster gets a directory holding the credentials it needs and no
others; the container manager writes them (``admin.container_managers._credentials``):
a local cluster under ``<data_dir>/secrets/``, Docker in a volume mounted read-only,
Kubernetes as Secrets mounted as volumes. One file per credential, its value as text::

    admin-token.sha256   hex sha256 of the admin token: frontends and replicas check a
                         bearer token against it and never hold the token itself
    redis-password       Redis's password (frontends, Redis)
    rpc-server.public    the query frontends' CURVE key pair (Z85): replicas pin the public
    rpc-server.secret    key, frontends serve with the secret one
    rpc-client.public    the replicas' CURVE key pair: frontends accept only this public
    rpc-client.secret    key, replicas authenticate with the secret one

Frontends get ``FRONTEND_FILES``, replicas ``REPLICA_FILES``. The admin token itself
lives only where the admin client reads it (``<data_dir>/admin-token`` locally).
Values are never logged; errors name the file, not its content.

Pure standard library: this module goes into every model image.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Final

ADMIN_TOKEN_SHA256: Final = "admin-token.sha256"
REDIS_PASSWORD: Final = "redis-password"
RPC_SERVER_PUBLIC: Final = "rpc-server.public"
RPC_SERVER_SECRET: Final = "rpc-server.secret"
RPC_CLIENT_PUBLIC: Final = "rpc-client.public"
RPC_CLIENT_SECRET: Final = "rpc-client.secret"

FRONTEND_FILES: Final = (
    ADMIN_TOKEN_SHA256,
    REDIS_PASSWORD,
    RPC_SERVER_PUBLIC,
    RPC_SERVER_SECRET,
    RPC_CLIENT_PUBLIC,
)
REPLICA_FILES: Final = (ADMIN_TOKEN_SHA256, RPC_SERVER_PUBLIC, RPC_CLIENT_PUBLIC, RPC_CLIENT_SECRET)

SECRETS_DIR_ENV: Final = "SCHOONER_SECRETS_DIR"


class CredentialError(Exception):
    """A credential file is missing, unreadable or empty."""


def read(directory: str | os.PathLike[str], name: str) -> str:
    """The credential ``name`` from ``directory``, stripped of surrounding whitespace."""
    path = Path(directory) / name
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise CredentialError(
            f"the credential file {path} is missing: the container manager writes it when "
            "the cluster starts; pass --secrets-dir the directory it wrote"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"cannot read the credential file {path}: {exc}") from None
    if not value:
        raise CredentialError(f"the credential file {path} is empty")
    return value


def read_optional(directory: str | os.PathLike[str] | None, name: str) -> str | None:
    """The credential ``name`` from ``directory``, or None if there is no directory or no
    such file (a credential the cluster does not use, such as the password of a Redis
    the user runs); other failures raise ``CredentialError`` as ``read`` does."""
    if directory is None or not (Path(directory) / name).exists():
        return None
    return read(directory, name)


def sha256_hex(value: str | bytes) -> str:
    """The hex sha256 of a token, as ``admin-token.sha256`` holds it."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return hashlib.sha256(data).hexdigest()


def token_matches(presented: str | bytes, expected_sha256_hex: str) -> bool:
    """Whether ``presented`` is the token whose sha256 is ``expected_sha256_hex``.

    Constant-time in the token's content: both sides are digests of equal length.
    """
    return hmac.compare_digest(sha256_hex(presented), expected_sha256_hex.strip().lower())
