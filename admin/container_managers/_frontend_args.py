"""Query frontend settings every container manager passes the same way."""

from __future__ import annotations

import math

from admin.exceptions import InvalidRequestError

__all__ = ["access_log_args", "check_access_log_sample"]


def check_access_log_sample(sample: float | None) -> None:
    """``InvalidRequestError`` unless ``sample`` is None or a number within 0..1."""
    if sample is None:
        return
    if (
        isinstance(sample, bool)
        or not isinstance(sample, int | float)
        or not math.isfinite(sample)
        or not 0 <= sample <= 1
    ):
        raise InvalidRequestError(
            f"access_log_sample must be a number from 0 to 1 (the share of requests the "
            f"access log records; errors and defaults always are), got {sample!r}"
        )


def access_log_args(sample: float | None) -> list[str]:
    """The query frontend's ``--access-log-sample``; none for None (its own default:
    every request, or its environment's ``SCHOONER_ACCESS_LOG_SAMPLE``)."""
    check_access_log_sample(sample)
    return [] if sample is None else ["--access-log-sample", repr(float(sample))]
