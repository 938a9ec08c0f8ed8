"""Which dashboard paths need a session, which are pages, and where a login may lead.

The admin-token middleware (``api/auth.py``) asks these: the login form, logging out and
the login page's own assets answer without a session; a page asked for without one
shows the login form (which then leads back to it); everything else under ``/ui``, like
every ``/admin`` route, needs the session cookie or the admin token.
"""

from __future__ import annotations

import re
from typing import Final

PREFIX: Final = "/ui"
LOGIN_PATH: Final = "/ui/login"
LOGOUT_PATH: Final = "/ui/logout"
ASSETS_PATH: Final = "/ui/assets"
# What the login page loads: reachable before logging in.
LOGIN_ASSETS: Final = frozenset({"ui.css", "favicon.svg"})

# Names as the admin API takes them (letters, digits, . _ - :), so that a page path
# can be a login's destination without leading anywhere else.
_PAGE: Final = re.compile(r"/ui(?:/(?:apps|models)/[A-Za-z0-9._:-]{1,128})?/?")


def is_page(path: str) -> bool:
    """``/ui``, ``/ui/apps/{app}``, ``/ui/models/{model}``."""
    return _PAGE.fullmatch(path) is not None


def is_open(path: str) -> bool:
    """Paths answered without a session or token."""
    if path in (LOGIN_PATH, LOGOUT_PATH):
        return True
    folder, _, name = path.rpartition("/")
    return folder == ASSETS_PATH and name in LOGIN_ASSETS


def safe_next(path: str | None) -> str:
    """Where a login leads: a dashboard page, else the overview (no open redirect)."""
    if path and is_page(path):
        return path
    return PREFIX
