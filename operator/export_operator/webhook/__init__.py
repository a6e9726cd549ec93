"""The exportjobs webhook: an aiohttp service that stores export requests as ExportJobs.

`app.create_app(settings)` builds the application; `exportjobs-webhook` (`main.main`) runs it.
The package talks to the API server only through `export_operator.kube` and shares names, enums
and URI parsing with the operator through `export_operator.resource`; it never imports the
controller.
"""
