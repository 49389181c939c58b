"""service: datasets exposed over the daemon's HTTP API, which serves the applied spec."""
from __future__ import annotations

from reconciler.providers.recorded import RecordedProvider


class ServiceProvider(RecordedProvider):
    type = "service"
    applied_message = "recorded; served by the daemon's HTTP API"
    deleted_message = "removed; no longer served"
