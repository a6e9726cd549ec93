"""How an ExportJob looks to clients: the `Export` schema of /openapi.json.

`GET /v1/exports/{id}` answers with it, and the completion callback carries the same view as
its CloudEvent `data`, so both are built here, from the ExportJob object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from export_operator import resource


def status_url(name: str) -> str:
    return f"/v1/exports/{name}"


def phase_of(obj: Mapping[str, Any]) -> str:
    """The phase an ExportJob is in; `Pending` until the operator says otherwise."""
    status = obj.get("status") or {}
    return str(status.get("phase") or resource.Phase.PENDING.value)


def owner_of(obj: Mapping[str, Any]) -> str | None:
    """The principal that created an ExportJob (`spec.owner`); None for one made before
    principals existed (only admins see those)."""
    owner = (obj.get("spec") or {}).get("owner")
    return owner if isinstance(owner, str) else None


def client_view(obj: Mapping[str, Any], *, download_url: str | None = None) -> dict[str, Any]:
    """The client's view of an ExportJob: id, phase, what was asked, and what happened."""
    metadata = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    name = str(metadata.get("name"))
    view: dict[str, Any] = {
        "id": name,
        "status": phase_of(obj),
        "status_url": status_url(name),
        "format": spec.get("format"),
        "source": (spec.get("source") or {}).get("uri"),
        "destination": (spec.get("destination") or {}).get("uri"),
        "callback_url": (spec.get("notify") or {}).get("url"),
        "cancel_requested": bool(spec.get("cancel", False)),
        "owner": owner_of(obj),
        "created_at": metadata.get("creationTimestamp"),
        "start_time": status.get("startTime"),
        "completion_time": status.get("completionTime"),
        "attempts": status.get("attempts"),
        "queue_position": status.get("queuePosition"),
        "progress": _progress(status.get("progress")),
        "error": _object(status.get("error")),
        "result": None,
    }
    result = _object(status.get("result"))
    if result is not None:
        view["result"] = {**result, "download_url": download_url}
    return view


_NOTIFICATION_FIELDS = {
    "state": "state",
    "attempts": "attempts",
    "lastStatusCode": "last_status_code",
    "lastAttemptTime": "last_attempt_time",
    "deliveredTime": "delivered_time",
    "lastError": "last_error",
}


def api_view(obj: Mapping[str, Any], *, download_url: str | None = None) -> dict[str, Any]:
    """What GET, list and cancel answer: the client's view and `notification`, the callback's
    delivery (null without a callback). The callback's own data leaves it out: it is the
    delivery under way."""
    view = client_view(obj, download_url=download_url)
    view["notification"] = notification_view(obj)
    return view


def notification_view(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """`status.notification` for clients (state Pending until the operator writes one)."""
    if not ((obj.get("spec") or {}).get("notify") or {}).get("url"):
        return None
    found = (obj.get("status") or {}).get("notification")
    found = found if isinstance(found, Mapping) else {}
    view = {public: found.get(field) for field, public in _NOTIFICATION_FIELDS.items()}
    view["state"] = view["state"] or "Pending"
    return view


def _object(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, dict) and value else None


def _progress(value: Any) -> dict[str, Any] | None:
    """The export's progress; a split export's per-range figures stay on the resource."""
    if not isinstance(value, dict):
        return None
    return _object({k: v for k, v in value.items() if k != "ranges"})
