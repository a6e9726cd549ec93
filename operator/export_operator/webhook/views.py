"""How an ExportJob looks to HTTP clients: the shared view (`export_operator.public_view`)."""

from __future__ import annotations

from export_operator.public_view import export_view, status_url

__all__ = ["export_view", "status_url"]
