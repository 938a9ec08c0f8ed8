"""OpenTelemetry spans of predict/update requests (placeholder until configured)."""

from __future__ import annotations

from query_frontend.queries import RequestTrace

ENABLED = False


def traceparent(trace: RequestTrace) -> str:
    return ""


def configure(service_instance: str) -> bool:
    return False


def shutdown() -> None:
    pass


def start(trace: RequestTrace, headers: object, path: str, arrival: float) -> None:
    pass


def abandon(trace: RequestTrace) -> None:
    pass


def finish(trace: RequestTrace, status: int, timing: object, arrival: float, now: float) -> None:
    pass
