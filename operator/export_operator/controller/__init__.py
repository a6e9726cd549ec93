"""The operator's controller: ExportJobs in, one batch/v1 Job each, status back on the ExportJob.

Read docs/architecture.md first. The path of one reconcile: `manager` (clients, caches, leader
election, workers; watch events become keys) → `workqueue` → `reconciler` (`reconcile(key)`, the
only writer of phase, conditions and result) → `status` (the pure decision) → `apicalls` (the
writes). Beside it: `admission` (who gets a slot, and its state), `recorder` (Events and the
"creations first" pacing), `caches` and `snapshots` (what the watches show), `jobs` (the Job
manifest), `outcomes` and `conditions` (how an export ended, its conditions), `leader`, `notify`
and `signing` (completion callbacks), `handlers` (kopf as the process runner), `settings`,
`metrics`, `sources`, `quantities`. This package never imports `export_operator.webhook`.
"""
