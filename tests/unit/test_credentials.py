"""The cluster's credentials: generated once, private on disk, never shown."""

from __future__ import annotations

import stat
from pathlib import Path

from admin.container_managers._credentials import ClusterCredentials, LocalCredentialStore
from model_container import credentials as cred


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_first_start_generates_256_bit_secrets_kept_private(tmp_path: Path) -> None:
    store = LocalCredentialStore(tmp_path)
    creds = store.ensure()
    assert len(creds.admin_token) >= 43  # 32 random bytes, URL-safe
    assert creds.admin_token != creds.redis_password
    assert mode(tmp_path / "admin-token") == 0o600
    assert (tmp_path / "admin-token").read_text().strip() == creds.admin_token
    for directory in (store.root, store.frontend_dir, store.replica_dir):
        assert mode(directory) == 0o700
        for file in directory.iterdir():
            assert file.is_dir() or mode(file) == 0o600


def test_each_process_gets_only_what_it_needs(tmp_path: Path) -> None:
    store = LocalCredentialStore(tmp_path)
    creds = store.ensure()
    assert sorted(p.name for p in store.frontend_dir.iterdir()) == sorted(cred.FRONTEND_FILES)
    assert sorted(p.name for p in store.replica_dir.iterdir()) == sorted(cred.REPLICA_FILES)
    # Nobody but the admin client holds the admin token or the other side's secret key.
    for directory in (store.frontend_dir, store.replica_dir):
        for file in directory.iterdir():
            assert creds.admin_token not in file.read_text()
    assert creds.rpc_client_secret not in "".join(
        p.read_text() for p in store.frontend_dir.iterdir()
    )
    assert cred.read(store.replica_dir, cred.ADMIN_TOKEN_SHA256) == cred.sha256_hex(
        creds.admin_token
    )


def test_a_restart_keeps_the_credentials_and_rotation_changes_only_the_token(
    tmp_path: Path,
) -> None:
    first = LocalCredentialStore(tmp_path).ensure()
    again = LocalCredentialStore(tmp_path).ensure()
    assert again.admin_token == first.admin_token
    assert again.rpc_server_secret == first.rpc_server_secret
    rotated = first.with_new_admin_token()
    LocalCredentialStore(tmp_path).save(rotated)
    loaded = LocalCredentialStore(tmp_path).load()
    assert loaded is not None
    assert loaded.admin_token == rotated.admin_token != first.admin_token
    assert loaded.redis_password == first.redis_password


def test_no_credential_shows_in_repr() -> None:
    creds = ClusterCredentials.generate()
    shown = repr(creds) + str(creds)
    for value in (creds.admin_token, creds.redis_password, creds.rpc_server_secret):
        assert value not in shown


def test_token_matches_only_the_token_itself() -> None:
    digest = cred.sha256_hex("s3cret")
    assert cred.token_matches("s3cret", digest)
    assert not cred.token_matches("s3cret ", digest)
    assert not cred.token_matches("", digest)


def test_redis_gets_its_password_from_a_private_config_file(tmp_path: Path) -> None:
    store = LocalCredentialStore(tmp_path)
    creds = store.ensure()
    assert mode(store.redis_config_file) == 0o600
    assert store.redis_config_file.read_text().strip() == f'requirepass "{creds.redis_password}"'
    assert (store.frontend_dir / cred.REDIS_PASSWORD).read_text().strip() == creds.redis_password


def test_with_the_users_redis_the_frontends_get_no_redis_password(tmp_path: Path) -> None:
    store = LocalCredentialStore(tmp_path)
    store.ensure()  # a cluster that ran its own Redis, restarted with redis_url=
    store.ensure(own_redis=False)
    assert not (store.frontend_dir / cred.REDIS_PASSWORD).exists()
    assert cred.read_optional(store.frontend_dir, cred.REDIS_PASSWORD) is None
    assert cred.read_optional(None, cred.REDIS_PASSWORD) is None
