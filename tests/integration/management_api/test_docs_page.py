"""The ``/docs`` page works offline: it names no other host, and every script, style and
icon it loads is served by the management frontend itself, behind the admin token.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

import httpx

from .test_auth import as_anyone, assert_unauthorized

CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


class _Assets(HTMLParser):
    """The URLs a page loads: ``<script src>`` and ``<link href>``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


async def _docs_page(api: httpx.AsyncClient) -> str:
    page = await api.get("/docs")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    return page.text


async def test_the_docs_page_names_no_other_host(api: httpx.AsyncClient) -> None:
    html = await _docs_page(api)
    assert "SwaggerUIBundle" in html
    for cdn in ("cdn.jsdelivr", "unpkg", "googleapis", "fastapi.tiangolo", "validator.swagger"):
        assert cdn not in html
    assert re.findall(r"(?:https?:)?//[\w.-]+", html) == []  # same-origin paths only
    assert "url: '/openapi.json'" in html


async def test_every_asset_of_the_docs_page_is_served(api: httpx.AsyncClient) -> None:
    parser = _Assets()
    parser.feed(await _docs_page(api))
    assert len(parser.urls) == 3  # the script, the style sheet and the icon
    for url in parser.urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", "")
        assert parts.path.startswith("/docs/assets/")
        r = await api.get(url)
        assert r.status_code == 200, url
        suffix = parts.path[parts.path.rindex(".") :]
        assert r.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], url
        assert len(r.content) > 0
    # What the page needs of the bundle is in it, and the spec it loads is served.
    bundle = await api.get("/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in bundle.content
    assert (await api.get("/openapi.json")).json()["info"]["title"] == "Schooner management API"


async def test_the_docs_page_and_its_assets_need_the_admin_token(api: httpx.AsyncClient) -> None:
    async with as_anyone(api) as anyone:
        for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
            assert_unauthorized(await anyone.get(path))


async def test_no_cdn_redoc_page(api: httpx.AsyncClient) -> None:
    assert (await api.get("/redoc")).status_code == 404
    assert (await api.get("/docs/oauth2-redirect")).status_code == 404
