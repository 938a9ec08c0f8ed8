"""A cluster's credentials for tests that start frontends or replicas themselves.

``make_cluster_secrets(tmp_path)`` generates credentials as a container manager would
and writes the frontends' and the replicas' directories; pass ``frontend_dir`` to
``--secrets-dir`` of the frontends and ``replica_dir`` to the replicas', and send
``creds.admin_token`` as the bearer token.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from admin.container_managers._credentials import ClusterCredentials, write_dir
from model_container.credentials import REDIS_PASSWORD


@dataclass(frozen=True)
class ClusterSecrets:
    creds: ClusterCredentials
    frontend_dir: Path
    replica_dir: Path

    @property
    def admin_token(self) -> str:
        return self.creds.admin_token

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.creds.admin_token}"}


def make_cluster_secrets(root: Path, *, redis_password: bool = False) -> ClusterSecrets:
    """Credentials written under ``root``. The frontends' directory holds no
    ``redis-password`` unless asked (``redis_password=True``): the tests' Redis has
    none, and a frontend given one would authenticate and be refused."""
    creds = ClusterCredentials.generate()
    frontend_dir, replica_dir = root / "secrets-frontend", root / "secrets-replica"
    frontend_files = creds.frontend_files()
    if not redis_password:
        del frontend_files[REDIS_PASSWORD]
    write_dir(frontend_dir, frontend_files)
    write_dir(replica_dir, creds.replica_files())
    return ClusterSecrets(creds, frontend_dir, replica_dir)
