"""The web dashboard at ``/ui``: login, session cookie, pages (see docs/dashboard.md).

``session.py`` signs and checks the cookie, ``throttle.py`` slows token guessing,
``paths.py`` says which paths need a session, ``pages.py`` serves the routes; the
pages themselves (HTML, CSS, JS) are in ``management_frontend/static/ui/``.
"""

from management_frontend.ui.pages import SecurityHeadersMiddleware, install_dashboard
from management_frontend.ui.session import Sessions

__all__ = ["SecurityHeadersMiddleware", "Sessions", "install_dashboard"]
