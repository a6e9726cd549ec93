"""An in-memory `export_operator.controller.apicalls.Writer` for the controller's unit tests:
it records every write, and raises the errors a test queues."""

from __future__ import annotations

from typing import Any

from export_operator.controller.apicalls import ApiError, Writer


class FakeWriter:
    """Records writes; `create_errors` / `patch_errors` are raised by the next calls, in order."""

    def __init__(self) -> None:
        self.jobs: list[dict[str, Any]] = []
        self.patches: list[tuple[str, dict[str, Any]]] = []
        self.deleted_jobs: list[str] = []
        self.deleted_exports: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.create_errors: list[ApiError] = []
        self.patch_errors: list[ApiError] = []
        self.existing: set[str] = set()
        """Jobs that exist although the (fake) watch does not show them."""

    async def job_exists(self, *, namespace: str, name: str) -> bool:
        return name in self.existing or any(j["metadata"]["name"] == name for j in self.jobs)

    async def create_job(self, job: dict[str, Any]) -> bool:
        if self.create_errors:
            raise self.create_errors.pop(0)
        self.jobs.append(job)
        return True

    async def patch_status(
        self, *, namespace: str, name: str, uid: str, status: dict[str, Any]
    ) -> None:
        if self.patch_errors:
            raise self.patch_errors.pop(0)
        self.patches.append((name, status))

    async def delete_job(self, *, namespace: str, name: str) -> None:
        self.deleted_jobs.append(name)

    async def delete_export(self, *, namespace: str, name: str, uid: str) -> None:
        self.deleted_exports.append(name)

    async def post_event(self, **event: Any) -> None:
        self.events.append(event)

    def status(self, name: str) -> dict[str, Any]:
        """The status of ExportJob `name` after every patch written (None deletes a field)."""
        merged: dict[str, Any] = {}
        for patched, status in self.patches:
            if patched == name:
                merged.update(status)
        return {k: v for k, v in merged.items() if v is not None}


def _conforms(writer: FakeWriter) -> Writer:
    return writer  # mypy holds the fake to the Protocol
