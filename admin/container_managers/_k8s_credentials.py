"""A Kubernetes cluster's credentials, kept as Secrets in its namespace.

``schooner-<c>-credentials`` holds every credential (the admin token included) and is
mounted by no pod; ``-frontend-secrets`` and ``-replica-secrets`` hold what the
frontends and the model pods mount read-only at ``/run/schooner/secrets``;
``-redis-config`` holds the ``redis.conf`` Redis reads its password from
(``_k8s_specs``). Made at the first ``start()`` when missing -- or beforehand by
``deploy/k8s/make-secrets.sh``, which prints the same objects (``secrets_for``) -- and
kept by ``stop_all()``; ``destroy()`` deletes them. Rotating the admin token patches the
token and its sha256 in place: the kubelet refreshes the mounted files within about a
minute and the frontends pick the change up. No secret goes into an error message: the
API wrapper names objects, never their content.
"""

from __future__ import annotations

from typing import Any

from admin.container_managers import _k8s_specs as specs
from admin.container_managers._credentials import ADMIN_TOKEN, ClusterCredentials
from admin.container_managers._k8s_api import KubeAPI
from model_container import credentials as cred


def secrets_for(settings: specs.KubeSettings, creds: ClusterCredentials) -> list[Any]:
    """The cluster's Secrets holding ``creds``."""
    own_redis = settings.redis_url is None
    out = [
        settings.secret(specs.ALL_SECRETS, creds.all_files()),
        settings.secret(specs.FRONTEND_SECRETS, creds.frontend_files(redis_password=own_redis)),
        settings.secret(specs.REPLICA_SECRETS, creds.replica_files()),
    ]
    if own_redis:
        out.append(settings.secret(specs.REDIS_CONFIG, {specs.REDIS_CONF: creds.redis_config()}))
    return out


class KubeCredentialStore:
    def __init__(self, api: KubeAPI, settings: specs.KubeSettings) -> None:
        self._api = api
        self._settings = settings

    def load(self) -> ClusterCredentials | None:
        """The credentials in the cluster's Secret, or None if there is none (or it
        lacks some)."""
        found = self._api.read("Secret", self._settings.secret_name(specs.ALL_SECRETS))
        if found is None:
            return None
        try:
            return ClusterCredentials.from_files(specs.KubeSettings.secret_files(found))
        except KeyError:
            return None

    def ensure(self) -> ClusterCredentials:
        """The stored credentials, generated at the first start; each Secret the pods
        mount created if it is missing (one deleted by hand comes back)."""
        creds = self.load()
        if creds is None:
            creds = ClusterCredentials.generate()
        for secret in secrets_for(self._settings, creds):
            self._api.create(secret, exist_ok=True)
        return creds

    def rotate_admin_token(self) -> ClusterCredentials | None:
        """A new admin token in the cluster's Secret, and its sha256 in the Secrets the
        pods mount; None if the cluster has no credentials (it never started)."""
        current = self.load()
        if current is None:
            return None
        rotated = current.with_new_admin_token()
        s = self._settings
        patches = {
            specs.ALL_SECRETS: {
                ADMIN_TOKEN: rotated.admin_token,
                cred.ADMIN_TOKEN_SHA256: rotated.admin_token_sha256,
            },
            specs.FRONTEND_SECRETS: {cred.ADMIN_TOKEN_SHA256: rotated.admin_token_sha256},
            specs.REPLICA_SECRETS: {cred.ADMIN_TOKEN_SHA256: rotated.admin_token_sha256},
        }
        for kind, files in patches.items():
            data = s.secret(kind, files).data
            self._api.patch("Secret", s.secret_name(kind), {"data": data})
        return rotated

    def delete(self) -> None:
        for secret in self._api.find("Secret", self._settings.label_selector(specs.CREDENTIALS)):
            self._api.delete("Secret", secret.metadata.name)


def main(argv: list[str] | None = None) -> int:
    """Print fresh Secrets for a cluster as a JSON ``List``, for ``kubectl create -f -``
    (``deploy/k8s/make-secrets.sh``): what ``start()`` makes when they are missing."""
    import argparse
    import json

    parser = argparse.ArgumentParser(prog="deploy/k8s/make-secrets.sh", description=main.__doc__)
    parser.add_argument("--cluster", default="default", help="cluster name (default: default)")
    parser.add_argument("--namespace", default="schooner", help="namespace (default: schooner)")
    parser.add_argument(
        "--redis-url",
        default=None,
        help="the Redis of your own the frontends use (then no Redis password is made)",
    )
    args = parser.parse_args(argv)
    settings = specs.KubeSettings(args.cluster, namespace=args.namespace, redis_url=args.redis_url)
    items = [specs.to_json(s) for s in secrets_for(settings, ClusterCredentials.generate())]
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
    return 0
