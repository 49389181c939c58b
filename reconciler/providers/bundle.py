"""bundle: a set of resources applied as one unit.

The engine applies a bundle's members first (they are ordinary resources whose
`bundle` is the bundle's id) and the bundle itself last; applying the bundle
then confirms that every member holds its current spec, so a bundle is Ready
exactly when all of it is.
"""
from __future__ import annotations

from reconciler.core.record import READY, Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome


def bundle_members(ctx: ApplyContext, bundle_id: str) -> list[Resource]:
    return sorted((r for r in ctx.resources.values() if r.bundle == bundle_id), key=lambda r: r.id)


def unready_members(ctx: ApplyContext, members: list[Resource]) -> list[str]:
    """A line per member that does not hold its current spec in the state store."""
    problems = []
    for member in members:
        record = ctx.store.get(member.id)
        if record is None:
            problems.append(f"{member.id} (never applied)")
        elif record.phase != READY:
            problems.append(f"{member.id} ({record.phase}{': ' + record.message if record.message else ''})")
        elif record.hash != member.hash:
            problems.append(f"{member.id} (its current spec is not applied yet)")
    return problems


def check_bundle(ctx: ApplyContext, resource: Resource) -> tuple[list[str], Outcome | None]:
    """(member ids, failure or None)."""
    members = bundle_members(ctx, resource.id)
    problems = unready_members(ctx, members)
    ids = [m.id for m in members]
    if problems:
        return ids, Outcome.failure(
            f"{resource.type} '{resource.name}': {len(problems)} of {len(members)} member(s) not ready: "
            f"{'; '.join(problems)}; fix them and apply again", members=ids)
    return ids, None


def observe_members(ctx: ApplyContext, record: Record) -> dict:
    records = ctx.records or ctx.store.records()
    return {"members": {r.id: r.phase for r in records.values() if r.bundle == record.id}}


class BundleProvider:
    type = "bundle"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        ids, failure = check_bundle(ctx, resource)
        if failure:
            return failure
        return Outcome.success(f"all {len(ids)} member(s) ready", members=ids)

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        return Outcome.success("bundle removed (its members are deleted on their own, in reverse order)")

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        return observe_members(ctx, record)
