"""Schooner's records in the shapes Clipper's management API answered with.

Clipper's ``get_all_apps(verbose=True)`` and ``get_app_info`` give ``name``,
``input_type``, ``default_output`` (a string), ``latency_slo_micros`` (an int) and
``linked_models``; ``get_all_models(verbose=True)`` and ``get_model_info`` give
``model_name``, ``model_version``, ``input_type``, ``labels``, ``container_name``,
``model_data_path`` and ``is_current_version``; ``get_all_model_replicas(verbose=True)``
and ``get_model_replica_info`` give ``model_id`` (``"name:version"``), ``model_name``,
``model_version``, ``model_replica_id`` (an int) and ``input_type``. These functions
build exactly those keys from Schooner's records (``management_frontend.state.records``);
the native ``Connection`` returns the full records.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from admin.clipper.container_manager import CONTAINERLESS_MODEL_IMAGE

__all__ = [
    "app_record",
    "clipper_input_type",
    "default_text",
    "model_record",
    "replica_key",
    "replica_records",
]

# Clipper's name for the one input type Schooner names differently.
_CLIPPER_INPUT_TYPES = {"ints": "integers"}

# What Clipper's admin client sent as a model's data path since it stopped using one.
MODEL_DATA_PATH = "DEPRECATED"


def clipper_input_type(input_type: object) -> str:
    """Schooner's input type name as Clipper spells it ("ints" is "integers")."""
    name = str(input_type)
    return _CLIPPER_INPUT_TYPES.get(name, name)


def default_text(default_output: Any) -> str:
    """An app's default output as the string Clipper stored: strings as they are, any
    other JSON value as its JSON text."""
    if isinstance(default_output, str):
        return default_output
    return json.dumps(default_output)


def app_record(app: Mapping[str, Any]) -> dict[str, Any]:
    """A Schooner app record (with ``linked_models``) in Clipper's shape."""
    return {
        "name": app["name"],
        "input_type": clipper_input_type(app["input_type"]),
        "default_output": default_text(app.get("default_output")),
        "latency_slo_micros": int(app["slo_micros"]),
        "linked_models": list(app.get("linked_models") or []),
    }


def model_record(
    version: Mapping[str, Any], *, is_current_version: bool, container_name: str
) -> dict[str, Any]:
    """A Schooner model-version record in Clipper's shape. ``container_name`` is the
    image its replicas run (``CONTAINERLESS_MODEL_IMAGE`` when it has no bundle)."""
    return {
        "model_name": version["name"],
        "model_version": str(version["version"]),
        "input_type": clipper_input_type(version["input_type"]),
        "labels": list(version.get("labels") or []),
        "container_name": container_name
        if version.get("bundle_sha256")
        else (CONTAINERLESS_MODEL_IMAGE),
        "model_data_path": MODEL_DATA_PATH,
        "is_current_version": bool(is_current_version),
    }


def replica_records(replicas: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Connected replicas in Clipper's shape, one per replica (Schooner lists a replica
    once per query frontend it connected to), ordered by model, version and index.

    ``model_replica_id`` is the replica's index: the ``N`` of the ids Schooner's local
    and Docker managers give (``<model>-<version>-rN``), else its place among its
    version's replicas ordered by id (a Kubernetes pod's id is its name).
    """
    seen: dict[tuple[str, str], set[str]] = {}
    fields: dict[str, Mapping[str, Any]] = {}
    for replica in replicas:
        rid = str(replica["replica_id"])
        seen.setdefault((str(replica["model_name"]), str(replica["model_version"])), set()).add(rid)
        fields.setdefault(rid, replica)
    out = []
    for (name, version), ids in sorted(seen.items()):
        for place, rid in enumerate(sorted(ids, key=lambda r: (_index(r), r))):
            index = _index(rid)
            out.append(
                {
                    "model_id": f"{name}:{version}",
                    "model_name": name,
                    "model_version": version,
                    "model_replica_id": index if index >= 0 else place,
                    "input_type": clipper_input_type(fields[rid]["input_type"]),
                }
            )
    return out


def replica_key(record: Mapping[str, Any]) -> str:
    """A replica as Clipper's non-verbose listing names it: ``name:version:index``."""
    return f"{record['model_name']}:{record['model_version']}:{record['model_replica_id']}"


def _index(replica_id: str) -> int:
    """N of a replica id ``<model>-<version>-rN``; -1 for any other id."""
    head, sep, tail = replica_id.rpartition("-r")
    return int(tail) if sep and head and tail.isdigit() else -1
