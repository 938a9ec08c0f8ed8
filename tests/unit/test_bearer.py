"""The admin token check: bearer parsing, the constant-time digest comparison, and the
hash file re-read on rotation (looked at once a second, with a fake clock)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from admin.container_managers._credentials import new_token, write_private
from model_container import credentials as cred
from model_container.bearer import AdminTokenCheck, bearer_token


def test_bearer_token_reads_only_the_bearer_scheme() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token(b"bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer") is None
    assert bearer_token(None) is None


def test_a_rotation_is_seen_within_the_recheck_interval_and_not_before(tmp_path: Path) -> None:
    old, new = new_token(), new_token()
    path = tmp_path / cred.ADMIN_TOKEN_SHA256
    write_private(path, cred.sha256_hex(old))
    now = [0.0]
    check = AdminTokenCheck(tmp_path, clock=lambda: now[0])
    check.load()
    assert check.allows(f"Bearer {old}") and not check.allows(f"Bearer {new}")
    write_private(path, cred.sha256_hex(new))
    now[0] = 0.5  # not looked at again yet
    assert check.allows(f"Bearer {old}")
    now[0] = 1.5
    assert check.allows(f"Bearer {new}") and not check.allows(f"Bearer {old}")


def test_a_file_gone_missing_keeps_the_last_good_hash(tmp_path: Path) -> None:
    token = new_token()
    write_private(tmp_path / cred.ADMIN_TOKEN_SHA256, cred.sha256_hex(token))
    now = [0.0]
    check = AdminTokenCheck(tmp_path, clock=lambda: now[0])
    check.load()
    os.unlink(tmp_path / cred.ADMIN_TOKEN_SHA256)
    now[0] = 5.0
    assert check.allows(f"Bearer {token}")


def test_without_a_secrets_dir_nothing_is_accepted_and_the_reason_is_given() -> None:
    check = AdminTokenCheck(None)
    assert not check.allows("Bearer anything")
    assert "--secrets-dir" in check.failure("Bearer anything")
    with pytest.raises(cred.CredentialError, match="--secrets-dir"):
        check.load()


def test_failures_never_echo_the_token(tmp_path: Path) -> None:
    write_private(tmp_path / cred.ADMIN_TOKEN_SHA256, cred.sha256_hex(new_token()))
    check = AdminTokenCheck(tmp_path)
    check.load()
    sent = "Bearer guessed-secret-value"
    assert "guessed-secret-value" not in check.failure(sent)
    assert "not this cluster's admin token" in check.failure(sent)
    assert "needs the cluster's admin token" in check.failure(None)
    assert "guessed-secret-value" not in repr(check)
