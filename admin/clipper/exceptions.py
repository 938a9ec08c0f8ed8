"""Clipper's two exceptions, as ``SchoonerError`` subclasses, and the one place that
translates the admin client's errors into them.

    SchoonerError
     └── ClipperException         what every ``admin.clipper`` call raises (``.msg``)
          └── UnconnectedException  a call that needs start_clipper() or connect() first

Clipper code catches ``ClipperException``; Schooner code catching ``SchoonerError`` keeps
working. The error translated is kept as ``__cause__`` (so its type, status code and
message stay readable), and its message is the ``ClipperException``'s.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from admin.exceptions import NotConnectedError, SchoonerError

__all__ = ["ClipperException", "UnconnectedException", "clipper_errors"]

P = ParamSpec("P")
R = TypeVar("R")


class ClipperException(SchoonerError):  # noqa: N818 (Clipper's name)
    """An error of the Clipper drop-in; ``msg`` is its message, as in Clipper."""

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg


class UnconnectedException(ClipperException):
    """A ClipperConnection method was called before start_clipper() or connect()."""

    def __init__(self, msg: str = "") -> None:
        super().__init__(
            msg
            or "this ClipperConnection is not connected: call start_clipper() to start a "
            "cluster, or connect() to attach to a running one"
        )


def clipper_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Run ``method``, raising every ``SchoonerError`` it lets out as a
    ``ClipperException`` (``NotConnectedError`` as ``UnconnectedException``)."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except ClipperException:
            raise
        except NotConnectedError as exc:
            raise UnconnectedException(str(exc)) from exc
        except SchoonerError as exc:
            raise ClipperException(str(exc)) from exc

    return translated
