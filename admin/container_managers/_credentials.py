"""Generating a cluster's credentials and writing them where its processes read them.

A cluster has one admin token (256 bits from ``secrets``), one Redis password and two
CURVE key pairs (the query frontends' and the replicas'), generated at its first start
and kept across restarts. ``model_container.credentials`` names the files and says who
gets which; managers write ``frontend_files()`` where the frontends read them and
``replica_files()`` where the replicas do, and keep the admin token where the admin
client finds it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import zmq

from model_container import credentials as cred

# The admin token file's name beside the secrets (``<data_dir>/admin-token`` locally).
ADMIN_TOKEN = "admin-token"
# Environment variable that overrides the token a client reads from the cluster.
ADMIN_TOKEN_ENV = "SCHOONER_ADMIN_TOKEN"


def new_token() -> str:
    """A fresh secret: 256 bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True, repr=False)
class ClusterCredentials:
    """Every credential of one cluster. ``repr`` shows none of them."""

    admin_token: str
    redis_password: str
    rpc_server_public: str
    rpc_server_secret: str
    rpc_client_public: str
    rpc_client_secret: str

    def __repr__(self) -> str:
        return "ClusterCredentials(<hidden>)"

    @classmethod
    def generate(cls) -> ClusterCredentials:
        server_public, server_secret = zmq.curve_keypair()
        client_public, client_secret = zmq.curve_keypair()
        return cls(
            admin_token=new_token(),
            redis_password=new_token(),
            rpc_server_public=server_public.decode("ascii"),
            rpc_server_secret=server_secret.decode("ascii"),
            rpc_client_public=client_public.decode("ascii"),
            rpc_client_secret=client_secret.decode("ascii"),
        )

    def with_new_admin_token(self) -> ClusterCredentials:
        return replace(self, admin_token=new_token())

    @property
    def admin_token_sha256(self) -> str:
        return cred.sha256_hex(self.admin_token)

    def frontend_files(self, redis_password: bool = True) -> dict[str, str]:
        """What the frontends' secrets directory holds (``cred.FRONTEND_FILES``); without
        ``redis-password`` when the cluster's Redis is the user's (``redis_url``), which
        the frontends then reach without AUTH unless its URL says otherwise."""
        files = {
            cred.ADMIN_TOKEN_SHA256: self.admin_token_sha256,
            cred.REDIS_PASSWORD: self.redis_password,
            cred.RPC_SERVER_PUBLIC: self.rpc_server_public,
            cred.RPC_SERVER_SECRET: self.rpc_server_secret,
            cred.RPC_CLIENT_PUBLIC: self.rpc_client_public,
        }
        if not redis_password:
            del files[cred.REDIS_PASSWORD]
        return files

    def redis_config(self) -> str:
        """A redis.conf fragment requiring the cluster's password (a file, never argv)."""
        return f'requirepass "{self.redis_password}"'

    def redis_auth_command(self) -> bytes:
        """``AUTH <password>`` in RESP, for a readiness ping that must authenticate."""
        password = self.redis_password.encode("utf-8")
        return b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password)

    def replica_files(self) -> dict[str, str]:
        """What a replica's secrets directory holds (``cred.REPLICA_FILES``)."""
        return {
            cred.ADMIN_TOKEN_SHA256: self.admin_token_sha256,
            cred.RPC_SERVER_PUBLIC: self.rpc_server_public,
            cred.RPC_CLIENT_PUBLIC: self.rpc_client_public,
            cred.RPC_CLIENT_SECRET: self.rpc_client_secret,
        }

    def all_files(self) -> dict[str, str]:
        """Every credential as a file: the admin token and both directories' files."""
        return {ADMIN_TOKEN: self.admin_token, **self.frontend_files(), **self.replica_files()}

    @classmethod
    def from_files(cls, files: Mapping[str, str]) -> ClusterCredentials:
        """Read back ``all_files()``; ``KeyError`` names a missing file."""
        return cls(
            admin_token=files[ADMIN_TOKEN].strip(),
            redis_password=files[cred.REDIS_PASSWORD].strip(),
            rpc_server_public=files[cred.RPC_SERVER_PUBLIC].strip(),
            rpc_server_secret=files[cred.RPC_SERVER_SECRET].strip(),
            rpc_client_public=files[cred.RPC_CLIENT_PUBLIC].strip(),
            rpc_client_secret=files[cred.RPC_CLIENT_SECRET].strip(),
        )


def write_private(path: Path, value: str) -> None:
    """Write ``value`` to ``path`` readable by its owner only (0600), atomically: a
    reader sees the old value or the new one, never a partial file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(value + "\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_dir(directory: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` into ``directory`` (created 0700), each 0600."""
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    for name, value in files.items():
        write_private(directory / name, value)


class LocalCredentialStore:
    """A local cluster's credentials under its data directory::

    <data_dir>/admin-token         the admin token (0600): what the admin client sends
    <data_dir>/secrets/frontend/   the frontends' files (0700 directory, 0600 files)
    <data_dir>/secrets/replica/    the replicas' files
    <data_dir>/secrets/all/        every credential, the source the others are written from
    <data_dir>/secrets/redis.conf  ``requirepass`` for the Redis the manager runs (0600)

    ``own_redis=False`` (the user's ``redis_url``): no Redis password in ``frontend/``.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.root = data_dir / "secrets"
        self.frontend_dir = self.root / "frontend"
        self.replica_dir = self.root / "replica"
        self._all_dir = self.root / "all"
        self.redis_config_file = self.root / "redis.conf"
        self.admin_token_file = data_dir / ADMIN_TOKEN

    def load(self) -> ClusterCredentials | None:
        """The stored credentials, or ``None`` when there are none (or some are missing)."""
        if not self._all_dir.is_dir():
            return None
        files = {p.name: p.read_text(encoding="utf-8") for p in self._all_dir.iterdir()}
        try:
            return ClusterCredentials.from_files(files)
        except KeyError:
            return None

    def ensure(self, own_redis: bool = True) -> ClusterCredentials:
        """The stored credentials, generated on the first start; every file rewritten
        from them (repairing a deleted one)."""
        creds = self.load() or ClusterCredentials.generate()
        self.save(creds, own_redis)
        return creds

    def save(self, creds: ClusterCredentials, own_redis: bool = True) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        write_dir(self._all_dir, creds.all_files())
        write_dir(self.frontend_dir, creds.frontend_files(redis_password=own_redis))
        if not own_redis:
            (self.frontend_dir / cred.REDIS_PASSWORD).unlink(missing_ok=True)
        write_dir(self.replica_dir, creds.replica_files())
        write_private(self.redis_config_file, creds.redis_config())
        write_private(self.admin_token_file, creds.admin_token)
