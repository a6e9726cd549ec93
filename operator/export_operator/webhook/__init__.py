"""The exportjobs webhook: an aiohttp service that stores export requests as ExportJobs.

`create_app(settings)` builds the application; `exportjobs-webhook` (`main.main`) runs it. The
package talks to the API server only through `kube.new_api_client` and shares names, enums and
URI parsing with the operator through `export_operator.resource`; it never imports the
controller. `create_app` is loaded on first use, so `exportjobs-webhook --help` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from export_operator.webhook.settings import WebhookSettings

if TYPE_CHECKING:
    from export_operator.webhook.app import create_app

__all__ = ["WebhookSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from export_operator.webhook.app import create_app

        return create_app
    raise AttributeError(name)
