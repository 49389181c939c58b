"""service: datasets and queries served by the daemon's HTTP API (reconciler/daemon/data_api.py).

The daemon serves whatever service records the state holds, so applying one is a check and a
record: every dataset it exposes must be in the catalog (a depot found it, a workflow wrote it)
or be an output some workflow declares (written at its first run), and every token's secret
must have a value. The outcome records the service's URL path, which `get service` shows.
Token values are read only to check them; they never reach outputs or messages.
"""
from __future__ import annotations

from reconciler.core.record import Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome
from reconciler.providers.secret import resolve_secret

API_PREFIX = "/api/v1/services"


def service_path(workspace: str | None, name: str) -> str:
    """The URL path a service is served under."""
    return f"{API_PREFIX}/{workspace or 'public'}/{name}"


def _declared_outputs(ctx: ApplyContext) -> set[str]:
    """lake:// tables some desired or recorded workflow declares as an output."""
    from reconciler.core.resources import refs, validate_document

    specs = [r.spec for r in ctx.resources.values() if r.type == "workflow"]
    specs += [r.spec for rid, r in ctx.records.items() if r.type == "workflow" and r.spec and rid not in ctx.resources]
    out: set[str] = set()
    for spec in specs:
        model, _ = validate_document(spec, prefix=False)
        if model is not None:
            out.update(ref.target for ref in refs(model) if ref.kind == "write")
    return out


class ServiceProvider:
    type = "service"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        section = resource.spec.get("service") or {}
        problems: list[str] = []
        pending: list[str] = []
        declared: set[str] | None = None
        for d in section.get("datasets") or []:
            address = d["dataset"]
            if ctx.store.catalog.dataset(address) is not None:
                continue
            if declared is None:
                declared = _declared_outputs(ctx)
            if address in declared:
                pending.append(address)  # a workflow writes it; its first run puts it in the catalog
            else:
                problems.append(f"dataset '{d['name']}' ({address}) is not in the catalog and no workflow writes "
                                "it; apply the depot or workflow that provides it, or fix the address")
        for t in section.get("tokens") or []:
            _, err = resolve_secret(ctx, {"secret": t["secret"]}, resource.workspace or "public")
            if err:
                problems.append(f"token '{t['name']}': {err}")
        if problems:
            return Outcome.failure("; ".join(problems))
        path = service_path(resource.workspace, resource.name)
        message = f"served at {path}"
        if pending:
            message += f" (not written yet: {', '.join(pending)})"
        return Outcome.success(
            message, url=path,
            datasets={d["name"]: d["dataset"] for d in section.get("datasets") or []},
            queries=[q["name"] for q in section.get("queries") or []],
            consumers=[t["name"] for t in section.get("tokens") or []])

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        return Outcome.success("removed; no longer served")

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        return None  # the daemon serves the record itself: nothing outside the state to drift
