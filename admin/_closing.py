"""Resources that ``with`` closes, as httpx's clients are.

``Connection``, the JSON clients and the container managers each hold connections or
SDK clients; each defines ``close()`` and inherits ``with`` from ``Closing``: entering
returns the object as it is (opening nothing by itself), leaving calls ``close()``, also
when the block raised.
"""

from __future__ import annotations

import abc
from types import TracebackType
from typing import Self


class Closing(abc.ABC):
    """``with obj:`` closes ``obj`` on the way out."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release what this object holds; idempotent."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
