"""Logging setup shared by every Schooner process entry point (replicas and frontends).

Only entry points call this; library modules just use ``logging.getLogger(__name__)``.
"""

from __future__ import annotations

import logging.config


def configure_logging(level: str, quiet: tuple[str, ...] = ()) -> None:
    """Log to stderr at ``level``; loggers named in ``quiet`` log warnings and above."""
    logging.config.dictConfig(
        {
            "version": 1,
            "disable_existing_loggers": False,
            "formatters": {
                "plain": {"format": "%(asctime)s %(levelname)-7s %(name)s: %(message)s"}
            },
            "handlers": {
                "stderr": {
                    "class": "logging.StreamHandler",
                    "formatter": "plain",
                    "stream": "ext://sys.stderr",
                }
            },
            "root": {"level": level, "handlers": ["stderr"]},
            "loggers": {name: {"level": "WARNING"} for name in quiet},
        }
    )
