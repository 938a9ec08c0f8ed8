"""Reading the query frontend's ``/status`` answer: what it routes each app's links to.

After a change the admin client waits until the query frontend has applied it (see
``Connection._await_routes``); these functions are the conditions it waits on. Each gets
the ``apps`` object of ``/status``, where an app's entry looks like

    {"policy": "exp3", "arms": {"m1": "m1:2", "m2:1": "m2:1", "m3": null},
     "model": "m1:2", "models": ["m1:2", "m2:1"], "reason": null,
     "slo_micros": 100000, "cache_enabled": true}

``arms`` maps each link (``"model"`` or ``"model:version"``) to the ``model:version`` it
is routed to, null when it cannot be served. A query frontend of an earlier release
reports only ``model`` (the app's one route) and no ``arms`` or ``policy``; the
functions fall back to that, or report nothing to wait for.

A pipeline app's entry also lists every stage, in order, the first being the app's
links and policy above (an app of one stage has no ``stages``):

    "stages": [{"policy": "single", "arms": {"feat": "feat:1"}, ...},
               {"policy": "exp4", "arms": {"clf:1": "clf:1", "clf:2": "clf:2"}, ...}]

A query frontend of an earlier release lists no stages, and serves none: a one-stage
pipeline is waited on there for what it reports (the app, its links and policy); a
longer one is never served, and the wait ends at its timeout with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from management_frontend.state.keys import parse_arm

Apps = dict[str, Any]


def _entry(apps: Apps, app: str) -> dict[str, Any] | None:
    entry = apps.get(app)
    return entry if isinstance(entry, dict) else None


def _arms(entry: dict[str, Any]) -> dict[str, Any] | None:
    arms = entry.get("arms")
    return arms if isinstance(arms, dict) else None


def app_route(apps: Apps, app: str) -> str:
    """The ``model:version`` of the app's first link ("" for none or an unknown app)."""
    entry = _entry(apps, app)
    return str(entry.get("model") or "") if entry is not None else ""


def arm_route(apps: Apps, app: str, arm: str) -> str:
    """The ``model:version`` that link ``arm`` of ``app`` is routed to ("" for none)."""
    entry = _entry(apps, app)
    if entry is None:
        return ""
    arms = _arms(entry)
    if arms is None:  # an earlier query frontend: one route per app
        return app_route(apps, app)
    return str(arms.get(arm) or "")


def arm_gone(apps: Apps, app: str, arm: str) -> bool:
    """Whether ``app`` no longer has the link ``arm``."""
    entry = _entry(apps, app)
    if entry is None:
        return True
    arms = _arms(entry)
    if arms is None:
        return not app_route(apps, app).startswith(f"{parse_arm(arm)[0]}:")
    return arm not in arms


def follows_current(apps: Apps, model: str, route: str) -> bool:
    """Whether every link that follows ``model``'s current version (a link named just
    ``model``) is routed to ``route``; pinned links are left out."""
    for name, entry in apps.items():
        if not isinstance(entry, dict):
            continue
        arms = _arms(entry)
        if arms is None:
            current = app_route(apps, name)
            if current.startswith(f"{model}:") and current != route:
                return False
        elif model in arms and arms[model] != route:
            return False
    return True


def app_policy(apps: Apps, app: str) -> str | None:
    """An app's selection policy as the query frontend runs it; ``None`` if its
    ``/status`` does not say (nothing to wait for), "" if it does not know the app yet."""
    entry = _entry(apps, app)
    if entry is None:
        return ""
    if "policy" not in entry:
        return None
    return str(entry["policy"])


def cache_state(apps: Apps, app: str) -> bool | None:
    """An app's ``cache_enabled``; ``None`` if not reported (a query frontend whose
    ``/status`` omits it: then there is nothing to wait for)."""
    entry = _entry(apps, app)
    value = entry.get("cache_enabled") if entry is not None else None
    return value if isinstance(value, bool) else None


def app_stages(apps: Apps, app: str) -> list[dict[str, Any]] | None:
    """Every stage of ``app`` as the query frontend serves it (``{"policy", "arms"}``
    each, in order); ``None`` if its ``/status`` does not list them."""
    entry = _entry(apps, app)
    stages = entry.get("stages") if entry is not None else None
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        return None
    return stages


def serves_pipeline(apps: Apps, app: str, stages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the query frontend serves ``app`` with these ``stages`` (the API's
    ``{"arms", "policy"}`` each): as many stages, with their arms and policies, stage
    by stage. An entry without ``stages`` is an app of one stage, its links and policy."""
    entry = _entry(apps, app)
    if entry is None:
        return False
    served = app_stages(apps, app)
    if served is None:
        served = [{"arms": _arms(entry), "policy": entry.get("policy")}]
    return len(served) == len(stages) and all(
        _stage_is(have, want) for have, want in zip(served, stages, strict=True)
    )


def stage_policy(apps: Apps, app: str, stage: int) -> str | None:
    """The policy of stage ``stage`` (from 1) of ``app`` as the query frontend runs it;
    ``None`` if its ``/status`` does not say (nothing to wait for), "" if it has no such
    app or stage."""
    if stage == 1:
        return app_policy(apps, app)
    if _entry(apps, app) is None:
        return ""
    served = app_stages(apps, app)
    if served is None:
        return None
    if stage > len(served):
        return ""
    policy = served[stage - 1].get("policy")
    return None if policy is None else str(policy)


def _stage_is(have: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    arms = have.get("arms")
    names = set(arms) if isinstance(arms, dict | list) else None
    policy = have.get("policy")
    return (names is None or names == set(want["arms"])) and policy in (
        None,
        want.get("policy", "single"),
    )
