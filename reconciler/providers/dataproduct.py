"""dataproduct: a bundle plus product context (domain, ports, SLOs), registered in the
catalog as a first-class data product once all of its members are ready."""
from __future__ import annotations

from reconciler.core.record import Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome
from reconciler.providers.bundle import check_bundle, observe_members


class DataProductProvider:
    type = "dataproduct"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        ids, failure = check_bundle(ctx, resource)
        if failure:
            return failure
        section = resource.spec.get("dataproduct") or {}
        ctx.store.catalog.upsert_dataproduct(
            resource.name,
            domain=section.get("domain"),
            owner=resource.spec.get("owner"),
            spec={
                "description": resource.spec.get("description"),
                "tags": resource.spec.get("tags") or [],
                "workspaces": section.get("workspaces") or [],
                "inputs": section.get("inputs") or [],
                "outputs": section.get("outputs") or [],
                "slos": section.get("slos") or [],
                "members": ids,
                "commit": ctx.commit,
            },
        )
        return Outcome.success(f"registered in the catalog; all {len(ids)} member(s) ready", members=ids)

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        ctx.store.catalog.drop_dataproduct(record.name)
        return Outcome.success("removed from the catalog (its members are deleted on their own, in reverse order)")

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        observed = observe_members(ctx, record)
        observed["registered"] = ctx.store.catalog.dataproduct(record.name) is not None
        return observed
