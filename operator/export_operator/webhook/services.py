"""The webhook's runtime objects and the typed `web.AppKey`s handlers reach them by."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web

from export_operator.presign import Presigner
from export_operator.webhook.cache import ExportCache
from export_operator.webhook.limits import RateLimiter
from export_operator.webhook.lookup import MissLookup
from export_operator.webhook.metrics import WebhookMetrics
from export_operator.webhook.settings import WebhookSettings
from export_operator.webhook.sns import SnsVerifier
from export_operator.webhook.store import ExportStore


@dataclass(kw_only=True)
class Services:
    """What a handler needs besides the request. Created with the app (so the app's state is not
    changed after it starts); the cleanup context fills in the connections at start-up."""

    cache: ExportCache
    store: ExportStore = field(init=False)
    lookup: MissLookup = field(init=False)
    """The cache, with one bounded API read on a miss (read-your-write across replicas)."""
    presigner: Presigner = field(init=False)
    sns: SnsVerifier = field(init=False)
    rate: RateLimiter = field(default_factory=RateLimiter)
    """Each principal's request rate (token buckets)."""
    shutting_down: bool = False
    """Set on shutdown so /readyz fails while in-flight requests finish."""


SETTINGS = web.AppKey("settings", WebhookSettings)
METRICS = web.AppKey("metrics", WebhookMetrics)
SERVICES = web.AppKey("services", Services)
