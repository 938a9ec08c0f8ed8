"""The dashboard's login and session over plain HTTP (no browser), on a real cluster.

What a browser would see: without a session a page is the login form and the admin
API is 401; a login with the token sets an HttpOnly, SameSite=Strict cookie that is not
the token and that opens the pages and the admin API; the token is never in a URL or
a page; a change made with the cookie alone needs the dashboard's header and origin; a
wrong token is refused (and logged without it), repeated failures are throttled; a
token rotation ends every session. The throttling test runs last: it locks 127.0.0.1
out of this cluster's login for a minute.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from dashboards import Dashboard
from polling import eventually

pytestmark = [pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def cluster(dashboard_cluster: Dashboard) -> Iterator[Dashboard]:
    conn = dashboard_cluster.conn
    conn.register_application(
        name="auth-app", input_type="doubles", default_output="-1.0", slo_micros=100_000
    )
    yield dashboard_cluster


def client(cluster: Dashboard) -> httpx.Client:
    return httpx.Client(base_url=cluster.base, timeout=10, follow_redirects=False)


def login(http: httpx.Client, token: str, next_path: str = "/ui") -> httpx.Response:
    return http.post("/ui/login", data={"token": token, "next": next_path})


def session_cookie(response: httpx.Response) -> str:
    header = response.headers["set-cookie"]
    match = re.match(r"schooner_ui=([^;]+);", header)
    assert match, header
    return match.group(1)


def test_without_a_session_pages_show_the_login_form_and_the_api_is_401(cluster: Dashboard) -> None:
    with client(cluster) as http:
        for path in ("/ui", "/ui/apps/auth-app", "/ui/models/m"):
            page = http.get(path)
            assert page.status_code == 200
            assert 'action="/ui/login"' in page.text and 'type="password"' in page.text
            assert f'name="next" value="{path}"' in page.text
            assert "default-src 'none'" in page.headers["content-security-policy"]
            assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        # The login page's stylesheet loads without a session; the scripts do not.
        assert http.get("/ui/assets/ui.css").status_code == 200
        assert http.get("/ui/assets/main.js").status_code == 401
        r = http.get("/admin/apps")
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert http.put("/admin/models/m/current_version", json={"version": "1"}).status_code == 401


def test_login_sets_a_strict_httponly_cookie_that_is_not_the_token(cluster: Dashboard) -> None:
    token = cluster.token()
    with client(cluster) as http:
        r = login(http, token, "/ui/apps/auth-app")
        assert r.status_code == 303
        assert r.headers["location"] == "/ui/apps/auth-app"
        cookie = r.headers["set-cookie"]
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "path=/", "samesite=strict"} <= flags
        assert "secure" not in flags  # plain HTTP: a Secure cookie would never come back
        value = session_cookie(r)
        assert token not in cookie and token not in value
        assert token not in r.headers.get("location", "")

        # The cookie opens the pages and the admin API's reads.
        http.cookies.set("schooner_ui", value)
        page = http.get("/ui/apps/auth-app")
        assert page.status_code == 200 and "main.js" in page.text
        assert token not in page.text
        assert http.get("/ui/assets/main.js").status_code == 200
        apps = http.get("/admin/apps")
        assert apps.status_code == 200
        assert "auth-app" in [a["name"] for a in apps.json()]

        # A login with an open redirect in "next" lands on the overview instead.
        assert login(http, token, "https://evil.example/").headers["location"] == "/ui"
        assert login(http, token, "//evil.example/ui").headers["location"] == "/ui"

        # Logging out deletes the cookie.
        out = http.post("/ui/logout")
        assert out.status_code == 303 and out.headers["location"] == "/ui/login"
        assert (
            'schooner_ui=""' in out.headers["set-cookie"]
            or "Max-Age=0" in out.headers["set-cookie"]
        )


def test_a_tampered_or_made_up_cookie_opens_nothing(cluster: Dashboard) -> None:
    with client(cluster) as http:
        value = session_cookie(login(http, cluster.token()))
        expiry, nonce, mac = value.split(".")
        for forged in (
            f"{int(expiry) + 10**6}.{nonce}.{mac}",
            f"{expiry}.{nonce}.{'0' * 64}",
            cluster.token(),
            "1.2.3",
            "",
        ):
            http.cookies.clear()
            http.cookies.set("schooner_ui", forged)
            assert http.get("/admin/apps").status_code == 401, forged
            assert 'type="password"' in http.get("/ui").text


def test_a_replica_cannot_sign_a_session_with_the_token_hash_it_holds(cluster: Dashboard) -> None:
    # Every replica runs user code and gets admin-token.sha256 (to check /metrics); a
    # session signed with that hash alone must not open the admin API.
    import hashlib
    import hmac
    import time

    held = (cluster.data_dir / "secrets" / "replica" / "admin-token.sha256").read_text().strip()
    key = hashlib.sha256(b"schooner-ui-session-v1\x00" + held.lower().encode()).digest()
    payload = f"{int(time.time()) + 3600}.{'ab' * 16}"
    forged = f"{payload}.{hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()}"
    with client(cluster) as http:
        http.cookies.set("schooner_ui", forged)
        assert http.get("/admin/apps").status_code == 401
        put = http.put(
            "/admin/models/m/current_version", json={"version": "1"}, headers={"X-Schooner-UI": "1"}
        )
        assert put.status_code == 401


def test_a_wrong_token_shows_the_form_again_with_401_and_is_not_logged(cluster: Dashboard) -> None:
    with client(cluster) as http:
        r = login(http, "not-the-token-s3cr3t", "/ui/models/m")
        assert r.status_code == 401
        assert "set-cookie" not in r.headers
        assert "not this cluster" in r.text and 'type="password"' in r.text
        assert 'name="next" value="/ui/models/m"' in r.text
        assert "not-the-token-s3cr3t" not in r.text
        empty = login(http, "")
        assert empty.status_code == 400 and "Enter the cluster" in empty.text
    log = (cluster.data_dir / "logs").glob("management*.log")
    text = "".join(p.read_text(errors="replace") for p in log)
    assert "login from 127.0.0.1 refused: not the admin token" in text
    assert "not-the-token-s3cr3t" not in text
    assert cluster.token() not in text


def test_the_token_is_never_taken_from_a_url(cluster: Dashboard) -> None:
    with client(cluster) as http:
        r = http.get("/ui/login", params={"token": cluster.token()})
        assert r.status_code == 200 and "set-cookie" not in r.headers
        assert cluster.token() not in r.text
        assert http.get("/ui", params={"token": cluster.token()}).headers.get("set-cookie") is None
        # The form posts its body; it has no GET method and no token in its action.
        assert 'method="post"' in r.text


def test_a_change_with_the_cookie_needs_the_dashboards_header_and_origin(
    cluster: Dashboard,
) -> None:
    cluster.conn.register_application(
        name="csrf-app", input_type="doubles", default_output="-1.0", slo_micros=100_000
    )
    with client(cluster) as http:
        http.cookies.set("schooner_ui", session_cookie(login(http, cluster.token())))
        body = {"cache_enabled": False}
        plain = http.put("/admin/apps/csrf-app/cache", json=body)
        assert plain.status_code == 403 and "X-Schooner-UI" in plain.json()["message"]
        foreign = http.put(
            "/admin/apps/csrf-app/cache",
            json=body,
            headers={"X-Schooner-UI": "1", "Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        assert cluster.conn.get_app_info("csrf-app")["cache_enabled"] is True  # type: ignore[index]
        ours = http.put(
            "/admin/apps/csrf-app/cache",
            json=body,
            headers={"X-Schooner-UI": "1", "Origin": cluster.base},
        )
        assert ours.status_code == 200, ours.text
        assert cluster.conn.get_app_info("csrf-app")["cache_enabled"] is False  # type: ignore[index]
        # A cross-site login form is refused too.
        r = http.post(
            "/ui/login", data={"token": cluster.token()}, headers={"Origin": "https://evil.example"}
        )
        assert r.status_code == 403 and "set-cookie" not in r.headers
    # The bearer token needs neither: API clients are unchanged.
    with httpx.Client(
        base_url=cluster.base, timeout=10, headers={"Authorization": f"Bearer {cluster.token()}"}
    ) as api:
        assert (
            api.put("/admin/apps/csrf-app/cache", json={"cache_enabled": True}).status_code == 200
        )


def test_rotating_the_admin_token_ends_every_session(cluster: Dashboard) -> None:
    with client(cluster) as http:
        http.cookies.set("schooner_ui", session_cookie(login(http, cluster.token())))
        assert http.get("/admin/apps").status_code == 200
        old = cluster.token()
        cluster.conn.rotate_admin_token()
        assert cluster.token() != old
        eventually(
            lambda: http.get("/admin/apps").status_code == 401,
            "the session signed with the old token's hash to be refused",
        )
        assert 'type="password"' in http.get("/ui").text
        assert login(http, old).status_code == 401
        assert login(http, cluster.token()).status_code == 303


def test_repeated_wrong_tokens_are_throttled(cluster: Dashboard) -> None:
    # Last in the module: it locks this address out of the login for a minute.
    with client(cluster) as http:
        # Five failures a minute (counting the earlier tests' wrong tokens), then 429.
        statuses = [login(http, f"guess-{i}").status_code for i in range(5)]
        assert 401 in statuses and statuses[-1] == 429
        assert statuses == sorted(statuses)  # refused, refused, ..., then throttled
        r = login(http, cluster.token())  # even the right token waits
        assert r.status_code == 429
        assert int(r.headers["retry-after"]) > 0
        assert "Too many failed logins" in r.text and "set-cookie" not in r.headers
        # A client cannot name another address for itself: the frontend trusts no
        # X-Forwarded-For (uvicorn's default trusts it from 127.0.0.1, where it listens).
        for i in range(3):
            spoofed = http.post(
                "/ui/login",
                data={"token": f"guess-x{i}"},
                headers={"X-Forwarded-For": f"10.9.8.{i}", "Forwarded": f"for=10.9.8.{i}"},
            )
            assert spoofed.status_code == 429, spoofed.status_code
    logged = (cluster.data_dir / "logs" / "management.log").read_text()
    assert "10.9.8." not in logged
