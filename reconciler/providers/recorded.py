"""Providers whose types are validated by the loader and only recorded when applied: what they
declare takes effect elsewhere (the workflow runner, the query interface, the HTTP API),
which read the applied spec from the state store."""
from __future__ import annotations

from reconciler.core.record import Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome


class RecordedProvider:
    type = ""
    applied_message = "recorded"
    deleted_message = "forgotten"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        return Outcome.success(self.applied_message)

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        return Outcome.success(self.deleted_message)

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        return None  # nothing outside the state store to look at
