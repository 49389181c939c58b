"""A data product as its consumers see it: `get dataproduct NAME`, `/api/v1/dataproducts/{name}`.

Built from an open StateStore (read-only is enough) as plain JSON-safe values; the CLI and
the API render them and export.py turns them into ODCS and ODPS documents. The SLOs are
judged at the moment of the call (freshness and quality from what the store holds now,
availability from the daemon's recorded probes); the daemon's own last judgement is shown
beside them as `recorded`.
"""
from __future__ import annotations

import difflib
from datetime import datetime, timezone

from reconciler.core.diagnostics import UserError
from reconciler.core.ids import make_id
from reconciler.products.slo import evaluate_products, iso, member_phases, product_specs

LAKE_FILE = "lake.duckdb"  # in the state dir, as ApplyContext.lake_path has it


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def declared_checks(records) -> dict[str, list[dict]]:
    """dataset address -> the quality checks applied workflows declare on it, each as
    {"workflow", "job", "check"} with the check's mapping as written."""
    out: dict[str, list[dict]] = {}
    for rec in records.values():
        if rec.type != "workflow" or not rec.spec:
            continue
        for job in ((rec.spec.get("workflow") or {}).get("dag")) or ():
            spec = job.get("spec") or {}
            if job.get("stack") == "quality" and isinstance(spec, dict) and spec.get("dataset"):
                for check in spec.get("checks") or ():
                    out.setdefault(spec["dataset"], []).append({"workflow": rec.id, "job": job.get("name"),
                                                                "check": check})
    return out


def _port(store, port: dict, checks: dict[str, list[dict]]) -> dict:
    address = port.get("dataset", "")
    d = store.catalog.dataset(address)
    columns = store.catalog.columns(address) if d else []
    return {"name": port.get("name"), "dataset": address,
            "description": port.get("description") or (d or {}).get("description"),
            "in_catalog": d is not None, "kind": (d or {}).get("kind"), "location": (d or {}).get("location"),
            "row_count": (d or {}).get("row_count"), "updated_at": (d or {}).get("updated_at"),
            "owner": (d or {}).get("owner"), "tags": (d or {}).get("tags") or [],
            "columns": [{"name": c["name"], "type": c["type"], "tags": c.get("tags") or []} for c in columns],
            "checks": checks.get(address, [])}


def lineage_between(store, inputs: list[str], outputs: list[str]) -> list[dict]:
    """The recorded lineage edges on some path from an input to an output (every edge into the
    outputs when the product names no inputs)."""
    from reconciler.engine.queries import Lineage

    upstream: dict[tuple, dict] = {}
    for address in outputs:
        try:
            graph = Lineage(store, address)
        except UserError:  # never written and never catalogued: no lineage yet
            continue
        for e in graph.walk(True):
            upstream[(e["source"], e["target"], e["workflow_id"], e["job"])] = e
    edges = list(upstream.values())
    if inputs:
        reached, grew = set(inputs), True
        while grew:
            grew = False
            for e in edges:
                if e["source"] in reached and e["target"] not in reached:
                    reached.add(e["target"])
                    grew = True
        edges = [e for e in edges if e["source"] in reached]
    return sorted(({k: e[k] for k in ("source", "target", "workflow_id", "job")} for e in edges),
                  key=lambda e: (e["target"], e["source"], e["workflow_id"], e["job"]))


def _unknown(store, name: str, known: list[str]) -> UserError:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        hint = f"did you mean '{close[0]}'?"
    elif known:
        hint = f"data products: {', '.join(known)}"
    else:
        hint = "none is recorded yet: apply a `type: dataproduct` artefact first"
    return UserError(f"no data product named '{name}' is recorded in {store.state_dir}", hint=hint)


def dataproduct_view(store, name: str, now: datetime | None = None) -> dict:
    """Everything `get dataproduct NAME` shows. Unknown name: UserError with the known names."""
    now = _now(now)
    records = store.records()
    specs = product_specs(store, records)
    if name not in specs:
        raise _unknown(store, name, sorted(specs))
    spec = specs[name]
    status = evaluate_products(store, now, [name])[0]
    checks = declared_checks(records)
    record = records.get(make_id("dataproduct", name))
    phases = member_phases(name, spec, records)
    resources = [{"id": rid, "type": records[rid].type, "workspace": records[rid].workspace,
                  "name": records[rid].name, "phase": phase, "message": records[rid].message or ""}
                 for rid, phase in phases.items() if rid != make_id("dataproduct", name)]
    inputs = [_port(store, p, checks) for p in spec.get("inputs") or ()]
    outputs = [_port(store, p, checks) for p in spec.get("outputs") or ()]
    recorded = store.products.health(name)
    return {
        "name": name, "domain": spec.get("domain"), "owner": spec.get("owner"),
        "description": spec.get("description"), "tags": spec.get("tags") or [],
        "registered": spec.get("registered", False),
        "phase": record.phase if record else None, "message": (record.message or "") if record else "",
        "commit": record.commit if record else spec.get("commit"),
        "created_at": record.created_at if record else None,
        "labels": ((record.spec or {}).get("labels") or {}) if record else {},
        "workspaces": spec.get("workspaces") or [],
        "health": status.state, "health_detail": status.detail, "evaluated_at": iso(now),
        "inputs": inputs, "outputs": outputs, "resources": resources,
        "lineage": lineage_between(store, [p["dataset"] for p in inputs], [p["dataset"] for p in outputs]),
        "slos": [r.to_json() | {"spec": slo} for r, slo in zip(status.slos, spec.get("slos") or ())],
        "recorded": recorded[0] if recorded else None,
    }


def dataproducts_summary(store, now: datetime | None = None) -> list[dict]:
    """One line per data product: domain, owner, health, SLOs met."""
    now = _now(now)
    specs = product_specs(store)
    out = []
    for status in evaluate_products(store, now):
        spec = specs[status.name]
        out.append({"name": status.name, "domain": spec.get("domain"), "owner": spec.get("owner"),
                    "health": status.state, "health_detail": status.detail,
                    "slos_ok": sum(1 for r in status.slos if r.ok), "slos": len(status.slos),
                    "outputs": [p.get("dataset") for p in spec.get("outputs") or ()], "evaluated_at": iso(now)})
    return out


EXPORT_FORMATS = ("odcs", "odps")


def export_dataproduct(store, name: str, fmt: str, now: datetime | None = None) -> dict:
    """The product as an ODCS contract (`odcs`) or an ODPS product document (`odps`)."""
    from reconciler.products.export import to_odcs, to_odps

    view = dataproduct_view(store, name, now)
    if fmt == "odcs":
        return to_odcs(view, lake_path=str(store.state_dir / LAKE_FILE))
    if fmt == "odps":
        records = store.records()
        others = [{"name": n, "outputs": spec.get("outputs") or [],
                   "labels": ((records[rid].spec or {}).get("labels") or {}) if (rid := make_id("dataproduct", n))
                   in records else {}} for n, spec in product_specs(store, records).items()]
        return to_odps(view, others)
    raise UserError(f"unknown export format '{fmt}'; formats: {', '.join(EXPORT_FORMATS)}")
