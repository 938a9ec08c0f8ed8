"""A local cluster as the dashboard tests see it: where its dashboard and query API are,
its admin token (read from ``<data_dir>/admin-token`` each time: a test rotates it), and
a prediction through the real query frontend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from admin import Connection


@dataclass
class Dashboard:
    """A started cluster and where its dashboard is."""

    conn: Connection
    data_dir: Path

    @property
    def base(self) -> str:
        return f"http://{self.conn.get_management_addr()}"

    @property
    def query(self) -> str:
        return f"http://{self.conn.get_query_addr()}"

    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def predict(self, app: str, x: list[float]) -> dict[str, Any]:
        r = httpx.post(f"{self.query}/{app}/predict", json={"input": x}, timeout=10)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body
