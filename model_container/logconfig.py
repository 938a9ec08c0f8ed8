"""Logging setup shared by every Schooner process entry point (replicas and frontends).

Only entry points call this; library modules just use ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging.config

_PLAIN = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# A replica's lines name the requests of the batch running when they were made
# (``model_container.request_context``): "-" outside a batch.
_REPLICA = "%(asctime)s %(levelname)-7s %(name)s [%(request_id)s]: %(message)s"


def configure_logging(
    level: str, quiet: tuple[str, ...] = (), *, request_ids: bool = False
) -> None:
    """Log to stderr at ``level``; loggers named in ``quiet`` log warnings and above;
    ``request_ids`` (replicas): each line shows the request ids of the running batch."""
    if request_ids:
        from model_container.request_context import install

        install()
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {"plain": {"format": _REPLICA if request_ids else _PLAIN}},
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
                    "stream": "ext://sys.stderr",
                    **({"filters": ["request_id"]} if request_ids else {}),
                }
            },
            "filters": (
                {"request_id": {"()": "model_container.request_context.RequestIdFilter"}}
                if request_ids
                else {}
            ),
            "root": {"level": level, "handlers": ["stderr"]},
            "loggers": {name: {"level": "WARNING"} for name in quiet},
        }
    )
