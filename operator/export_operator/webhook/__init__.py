"""The exportjobs webhook: an aiohttp service that stores export requests as ExportJobs.

`create_app(settings)` builds the application; `exportjobs-webhook` (`main.main`) runs it. The
package talks to the API server only through `kube.new_api_client` and shares names, enums and
URI parsing with the operator through `export_operator.resource`; it never imports the kopf
handlers.
"""

from export_operator.webhook.app import create_app
from export_operator.webhook.settings import WebhookSettings

__all__ = ["WebhookSettings", "create_app"]
