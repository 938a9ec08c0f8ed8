"""A model bundle with more packages: Clipper's ``pkgs_to_install`` given with a bundle
directory (``build_and_deploy_model``, ``build_model``) are added to a copy of it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from admin.clipper.exceptions import ClipperException

__all__ = ["bundle_with_pkgs"]


class bundle_with_pkgs:  # noqa: N801 (used as a context manager, like a function)
    """The bundle at ``path``, or a copy of it whose ``model.json`` also lists ``pkgs``."""

    def __init__(self, path: str | os.PathLike[str], pkgs: Sequence[str] | None) -> None:
        self.path = path
        self.pkgs = list(pkgs or [])
        self._tmp: Any = None

    def __enter__(self) -> str | os.PathLike[str]:
        if not self.pkgs:
            return self.path
        import json
        import shutil
        import tempfile
        from pathlib import Path

        from model_container.bundle import MODEL_JSON

        if not all(isinstance(p, str) for p in self.pkgs):
            raise ClipperException(
                f"pkgs_to_install must be a list of pip requirement strings, got {self.pkgs!r}"
            )
        source = Path(self.path)
        info_path = source / MODEL_JSON
        try:
            doc = json.loads(info_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ClipperException(
                f"{source} is not a Schooner model bundle ({MODEL_JSON} unreadable: {exc}); "
                "write one with admin.clipper.deployers.python.deploy_python_closure"
            ) from exc
        self._tmp = tempfile.TemporaryDirectory(prefix="schooner-clipper-")
        copy = Path(self._tmp.name) / "bundle"
        try:
            shutil.copytree(source, copy)
            doc["pkgs"] = list(dict.fromkeys([*doc.get("pkgs", []), *self.pkgs]))
            (copy / MODEL_JSON).write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            self._tmp.cleanup()
            raise ClipperException(f"cannot copy the bundle {source}: {exc}") from exc
        return copy

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
