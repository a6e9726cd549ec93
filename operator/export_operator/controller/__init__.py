"""The kopf operator: ExportJobs in, one batch/v1 Job each, status back on the ExportJob.

Modules: `settings` (configuration), `views` (what the watches show), `jobs` (the Job manifest),
`notify` and `signing` (completion callbacks),
`outcomes` and `status` (status derivation), `queue` (admission), `reconciler` (API writes and
loops), `handlers` (kopf registration), `metrics`, `apicalls`, `sources`, `quantities`.
This package never imports `export_operator.webhook`.
"""
