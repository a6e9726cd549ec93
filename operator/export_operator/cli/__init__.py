"""`exportjobs`: the command line client of the webhook's HTTP API (standard library only).

`client` speaks HTTP, `progress` renders a waiting export, `main` parses the command line and maps
an export's outcome to the exit code (docs/cli.md).
"""
