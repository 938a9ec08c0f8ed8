"""Schooner's data plane: REST predict, batching and dispatch to model replicas over ZeroMQ."""

from query_frontend.app import create_app
from query_frontend.config import Config

__all__ = ["Config", "create_app"]
