"""The admin API's ``/docs`` page (Swagger UI), served from the package: no CDN.

FastAPI's own ``/docs`` and ``/redoc`` load their scripts, styles and icon from
cdn.jsdelivr.net (and fonts.googleapis.com), so on a machine without internet the page
is blank. ``install_docs_page`` turns both off (``FastAPI(docs_url=None,
redoc_url=None)``, in ``app.py``) and serves instead:

    /docs                 Swagger UI's page, pointing at the assets below and /openapi.json
    /docs/assets/<file>   swagger-ui-bundle.js, swagger-ui.css, favicon-32x32.png, from
                          management_frontend/static/swagger-ui/ (swagger-ui-dist, the
                          version and licence are next to them)

Both sit behind the admin token like every path but ``/healthz`` (``auth.py``). Swagger
UI's online validator badge is turned off too: it would fetch from validator.swagger.io.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

DOCS_PATH: Final = "/docs"
ASSETS_PATH: Final = "/docs/assets"
ASSETS_DIR: Final = Path(__file__).resolve().parent.parent / "static" / "swagger-ui"


def install_docs_page(app: FastAPI) -> None:
    """Serve ``/docs`` and its assets from ``ASSETS_DIR``; the app's ``docs_url`` and
    ``redoc_url`` must be None (FastAPI's CDN pages)."""
    if app.docs_url is not None or app.redoc_url is not None:
        raise ValueError("create the app with docs_url=None and redoc_url=None")
    # check_dir=False: create_app does no I/O; a missing directory is a 500 on first use
    # (and a failing test), not a crash at import.
    app.mount(ASSETS_PATH, StaticFiles(directory=ASSETS_DIR, check_dir=False), name="docs-assets")

    async def docs(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix, the page's URLs must carry it.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - docs",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon-32x32.png",
            swagger_ui_parameters={"validatorUrl": None},
        )

    app.add_api_route(DOCS_PATH, docs, methods=["GET"], include_in_schema=False)
