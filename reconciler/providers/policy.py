"""policy: access, mask and filter rules, enforced where data is read (query interface, services)."""
from __future__ import annotations

from reconciler.providers.recorded import RecordedProvider


class PolicyProvider(RecordedProvider):
    type = "policy"
    applied_message = "recorded; enforced by the query interface and services"
    deleted_message = "removed; no longer enforced"
