"""Clipper's ``clipper_admin.deployers``: ``from admin.clipper.deployers import python``."""

from __future__ import annotations

from admin.clipper.deployers import python

__all__ = ["python"]
