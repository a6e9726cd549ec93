"""The controller's caches: one informer each for ExportJobs, their Jobs and their pods.

Filled by list + watch (export_operator.informer) with snapshots (snapshots.py); read by the
reconciler and admission, never written by them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from export_operator import resource
from export_operator.controller.settings import OperatorSettings
from export_operator.controller.snapshots import ExportView, JobView, PodView
from export_operator.informer import Informer, Key
from export_operator.kube import collection_path
from export_operator.resource import job_name_for


def _pod_export_key(pod: PodView) -> Key:
    return (pod.namespace, pod.export_name)


class Caches:
    """ExportJobs by key, the processor's Jobs by (namespace, Job name), pods by ExportJob."""

    def __init__(self, settings: OperatorSettings) -> None:
        def informer(
            api_version: str, plural: str, decode: Callable[[Mapping[str, Any]], Any], **kw: Any
        ) -> Informer[Any]:
            return Informer(
                api=None,
                path=collection_path(api_version, plural, settings.namespace),
                decode=decode,
                watch_timeout=settings.api.watch_server_timeout_seconds,
                client_timeout=settings.api.watch_client_timeout_seconds,
                request_timeout=settings.api.request_timeout_seconds,
                connect_timeout=settings.api.connect_timeout_seconds,
                **kw,
            )

        self.exports: Informer[ExportView] = informer(
            resource.API_VERSION, resource.PLURAL, ExportView.from_body
        )
        self.jobs: Informer[JobView] = informer(
            "batch/v1", "jobs", JobView.from_body, label_selector=resource.LABEL_EXPORT
        )
        self.pods: Informer[PodView] = informer(
            "v1",
            "pods",
            PodView.from_body,
            label_selector=resource.LABEL_EXPORT,
            index_by=_pod_export_key,
        )

    @property
    def all(self) -> tuple[Informer[Any], ...]:
        return (self.exports, self.jobs, self.pods)

    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.all)

    def job_of(self, key: Key) -> JobView | None:
        """The Job of the ExportJob `key` (by its deterministic name and its label)."""
        view = self.jobs.get((key[0], job_name_for(key[1])))
        return view if view is not None and view.export_name == key[1] else None
