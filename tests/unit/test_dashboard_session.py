"""The dashboard's session values, login throttle and page paths, without a server;
and its cookie over HTTPS (``Secure``, ``__Host-``) through the ASGI app in process."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from credentials import make_cluster_secrets

from management_frontend import Config, create_app
from management_frontend.ui import paths
from management_frontend.ui.session import Sessions
from management_frontend.ui.throttle import LoginThrottle
from model_container.bearer import AdminTokenCheck


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def check_with(tmp_path: Path, token: str) -> AdminTokenCheck:
    from model_container.credentials import ADMIN_TOKEN_SHA256, sha256_hex

    (tmp_path / ADMIN_TOKEN_SHA256).write_text(sha256_hex(token) + "\n")
    return AdminTokenCheck(tmp_path, recheck_s=0.0)


def test_a_session_is_valid_until_it_expires_and_is_not_the_token(tmp_path: Path) -> None:
    clock = Clock()
    sessions = Sessions(check_with(tmp_path, "tok-1"), ttl_s=60, clock=clock)
    value = sessions.issue()
    assert "tok-1" not in value
    assert sessions.valid(value)
    assert sessions.issue() != value  # each login its own nonce
    clock.now += 59
    assert sessions.valid(value)
    clock.now += 2
    assert not sessions.valid(value)


def test_a_session_edited_or_made_up_is_refused(tmp_path: Path) -> None:
    sessions = Sessions(check_with(tmp_path, "tok-1"), ttl_s=60)
    expiry, nonce, mac = sessions.issue().split(".")
    for forged in (
        f"{int(expiry) + 3600}.{nonce}.{mac}",
        f"{expiry}.{nonce}x.{mac}",
        f"{expiry}.{nonce}.{mac[:-1]}0" if mac[-1] != "0" else f"{expiry}.{nonce}.{mac[:-1]}1",
        "tok-1",
        "",
        "x" * 500,
        f"-5.{nonce}.{mac}",
        f"{expiry}.é.{mac}",
    ):
        assert not sessions.valid(forged), forged


def test_rotating_the_token_ends_every_session(tmp_path: Path) -> None:
    check = check_with(tmp_path, "tok-1")
    sessions = Sessions(check, ttl_s=60)
    value = sessions.issue()
    check_with(tmp_path, "tok-2")  # the manager writes the new hash
    assert not sessions.valid(value)
    assert sessions.valid(sessions.issue())


def test_the_cookie_header_is_read_under_either_name(tmp_path: Path) -> None:
    sessions = Sessions(check_with(tmp_path, "tok-1"), ttl_s=60)
    value = sessions.issue()
    assert sessions.from_headers([(b"cookie", f"a=b; schooner_ui={value}".encode())])
    assert sessions.from_headers([(b"cookie", f"__Host-schooner_ui={value}".encode())])
    odd_first = f'prefs={{"a": [1, 2]}}; x="y; schooner_ui={value}'.encode()
    assert sessions.from_headers([(b"cookie", odd_first)])
    assert not sessions.from_headers([(b"cookie", b"schooner_ui=1.2.3")])
    assert not sessions.from_headers([(b"cookie", b"\xff\x00;;=")])
    assert not sessions.from_headers([(b"authorization", value.encode())])


def test_the_throttle_refuses_after_five_failures_a_minute_then_forgives() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_failures=5, window_s=60, clock=clock)
    for _ in range(4):
        throttle.failed("10.0.0.1")
        clock.now += 1
    assert throttle.retry_after("10.0.0.1") == 0
    throttle.failed("10.0.0.1")
    assert throttle.retry_after("10.0.0.1") == pytest.approx(56)
    assert throttle.retry_after("10.0.0.2") == 0  # per address
    clock.now += 57
    assert throttle.retry_after("10.0.0.1") == 0


def test_the_throttles_table_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(max_addresses=3, clock=clock)
    for i in range(10):
        throttle.failed(f"10.0.0.{i}")
        clock.now += 1
    assert len(throttle._failures) == 3


@pytest.mark.parametrize(
    ("asked", "lands"),
    [
        ("/ui/apps/a-b_c.1", "/ui/apps/a-b_c.1"),
        ("/ui/models/m", "/ui/models/m"),
        ("/ui", "/ui"),
        ("https://evil.example/ui", "/ui"),
        ("//evil.example", "/ui"),
        ("/ui/apps/../../admin", "/ui"),
        ("/ui/apps/x?y=1", "/ui"),
        ("/admin/apps", "/ui"),
        (None, "/ui"),
    ],
)
def test_a_login_leads_only_to_a_dashboard_page(asked: str | None, lands: str) -> None:
    assert paths.safe_next(asked) == lands


async def test_over_https_the_cookie_is_secure_with_the_host_prefix(tmp_path: Path) -> None:
    secrets = make_cluster_secrets(tmp_path)
    app = create_app(Config(secrets_dir=str(secrets.frontend_dir)))
    # The app in process, no lifespan (no Redis): a login needs only the token's hash.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://dashboard.test") as http:
        r = await http.post("/ui/login", data={"token": secrets.admin_token})
        assert r.status_code == 303
        cookie = r.headers["set-cookie"]
        assert re.match(r"__Host-schooner_ui=[^;]+;", cookie), cookie
        flags = {p.strip().lower() for p in cookie.split(";")[1:]}
        assert {"secure", "httponly", "path=/", "samesite=strict"} <= flags
        assert not any(f.startswith("domain") for f in flags)
        page = await http.get("/ui")
        assert page.status_code == 200 and "main.js" in page.text


def _signed_with_the_hash_alone(token_sha256: str, expiry: int) -> str:
    """A session value as whoever holds only ``admin-token.sha256`` could make one."""
    import hashlib
    import hmac

    key = hashlib.sha256(b"schooner-ui-session-v1\x00" + token_sha256.encode()).digest()
    payload = f"{expiry}.{'0' * 32}"
    return f"{payload}.{hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()}"


def test_the_token_hash_alone_cannot_sign_a_session(tmp_path: Path) -> None:
    # Every replica (user code) holds admin-token.sha256; a session key made of it alone
    # would let a model mint an admin session. The key also needs a secret of the
    # management frontend's.
    from model_container.credentials import sha256_hex

    clock = Clock()
    check = check_with(tmp_path, "tok-1")
    sessions = Sessions(check, ttl_s=60, clock=clock, server_secret="frontend-only")
    forged = _signed_with_the_hash_alone(sha256_hex("tok-1"), int(clock.now) + 30)
    assert not sessions.valid(forged)
    # Frontends that share the secret accept each other's sessions; others do not.
    issued = sessions.issue()
    assert Sessions(check, clock=clock, server_secret="frontend-only").valid(issued)
    assert not Sessions(check, clock=clock, server_secret="another").valid(issued)
    assert not Sessions(check, clock=clock).valid(issued)
