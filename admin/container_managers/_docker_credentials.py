"""A Docker cluster's credentials, kept by the cluster in named volumes.

Generated at the cluster's first ``start()`` and kept in the volume
``schooner-<cluster>-credentials`` (every credential, the admin token included; mounted
by no running container); each start rewrites, from it, the volumes the processes mount
read-only (``_docker_specs``): the frontends' files, the replicas' files and Redis's
``redis.conf``. The engine copies them in and out (``ClusterEngine.write_files`` and
``read_files``), so no secret is written on the host, put in an image, an environment
variable or a command line. The volumes outlive ``stop_all()``; ``destroy()`` removes
them with the Redis data they protect.

Files are owned by the images' user (uid 10001) and readable by it alone, except
``redis.conf``, readable by any user of the Redis container (a Redis image of the
user's own may run as its own user), which mounts it and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from admin.container_managers import _docker_specs as specs
from admin.container_managers._credentials import ClusterCredentials
from admin.container_managers._docker_engine import ClusterEngine
from model_container import credentials as cred

# The images' user (deploy/docker: "schooner", uid and gid 10001).
OWNER: Final = 10001
PRIVATE: Final = 0o400
REDIS_CONF_MODE: Final = 0o444


class DockerCredentialStore:
    """Reads and writes one cluster's credential volumes through ``engine``; ``image``
    gives an image to run the copying containers from (any image of the cluster)."""

    def __init__(
        self, engine: ClusterEngine, settings: specs.ClusterSettings, image: Callable[[], str]
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._image = image

    def load(self) -> ClusterCredentials | None:
        """The stored credentials, or None if the cluster has none (or some are missing)."""
        volume = self._settings.credentials_volume()
        if not self._engine.volume_exists(volume):
            return None
        files = self._engine.read_files(volume, self._image())
        try:
            return ClusterCredentials.from_files(files)
        except KeyError:
            return None

    def ensure(self) -> ClusterCredentials:
        """The stored credentials, generated on the first start; every volume rewritten
        from them (repairing one removed by hand)."""
        creds = self.load()
        if creds is None:
            creds = ClusterCredentials.generate()
            self._write(specs.CREDENTIALS, creds.all_files())
        self.distribute(creds)
        return creds

    def distribute(self, creds: ClusterCredentials) -> None:
        """Write what the frontends, the replicas and Redis mount, each volume made
        anew (no file of an earlier configuration stays: a Redis password when the
        Redis is now the user's). Only at start, when no container mounts them."""
        for kind in (specs.FRONTEND_SECRETS, specs.REPLICA_SECRETS, specs.REDIS_SECRETS):
            self._engine.remove_volume(self._settings.credentials_volume(kind))
        own_redis = self._settings.redis_url is None
        self._write(specs.FRONTEND_SECRETS, creds.frontend_files(redis_password=own_redis))
        self._write(specs.REPLICA_SECRETS, creds.replica_files())
        if own_redis:
            self._write(
                specs.REDIS_SECRETS, {specs.REDIS_CONF: creds.redis_config()}, REDIS_CONF_MODE
            )

    def rotate_admin_token(self) -> ClusterCredentials | None:
        """A new admin token, stored, and its sha256 rewritten in place where the
        frontends and replicas read it (they notice the file change); None if the
        cluster has no credentials (it never started)."""
        current = self.load()
        if current is None:
            return None
        rotated = current.with_new_admin_token()
        self._write(specs.CREDENTIALS, rotated.all_files())
        digest = {cred.ADMIN_TOKEN_SHA256: rotated.admin_token_sha256}
        self._write(specs.FRONTEND_SECRETS, digest)
        self._write(specs.REPLICA_SECRETS, digest)
        return rotated

    def _write(self, kind: str, files: dict[str, str], mode: int = PRIVATE) -> None:
        volume = self._settings.credentials_volume(kind)
        self._engine.write_files(volume, self._image(), files, owner=OWNER, mode=mode)
