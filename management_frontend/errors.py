"""The errors the management frontend raises, and the HTTP answer each one becomes.

    ManagementError            base class; ``code`` is the "error" field of the answer
     ├── Invalid       400     a request breaks a rule that needs the stored state to
     │                         check (a value alone breaking one is the contract's
     │                         ``state.InvalidValue``, answered the same way)
     ├── NotFound      404     unknown app, model, version or link
     ├── Conflict      409     already exists, still linked, input types differ, ...
     └── StartupError          Redis unreachable or holding a newer schema at startup

Redis connection errors are not wrapped here: the API answers them with 503
``unavailable`` at the boundary (``api/errors.py``).
"""

from __future__ import annotations

from typing import ClassVar


class ManagementError(Exception):
    """Base class; the message says what is wrong and what to do about it."""

    code: ClassVar[str] = "internal"
    status: ClassVar[int] = 500

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class Invalid(ManagementError, ValueError):  # noqa: N818 (named after the HTTP error code)
    code = "invalid"
    status = 400


class NotFound(ManagementError):  # noqa: N818 (named after the HTTP error code)
    code = "not_found"
    status = 404


class Conflict(ManagementError):  # noqa: N818 (named after the HTTP error code)
    code = "conflict"
    status = 409


class StartupError(ManagementError):
    """The service cannot start; raised from the lifespan, so the process exits."""

    code = "startup"
    status = 503
