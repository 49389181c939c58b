"""`get` and `delete`: reading recorded state and rendering it."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from reconciler.core.diagnostics import UserError

HEALTH = {"Ready": "Healthy", "Failed": "Degraded", "Blocked": "Degraded", "Applying": "Progressing",
          "Pending": "Progressing", "Deleting": "Progressing"}


def _out():
    from reconciler.cli.render import Out

    return Out(sys.stdout)


def age(ts: str | None) -> str:
    if not ts:
        return "-"
    try:
        then = datetime.fromisoformat(str(ts))
    except ValueError:
        return str(ts)
    if then.tzinfo is None:
        then = then.replace(tzinfo=timezone.utc)
    s = int((datetime.now(timezone.utc) - then).total_seconds())
    for unit, n in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= n:
            return f"{s // n}{unit}"
    return f"{max(s, 0)}s"


def _resolve_kind(kind: str | None) -> str | None:
    from reconciler.cli.commands import TYPE_ALIASES
    from reconciler.core.resources import TYPES

    if kind is None:
        return None
    k = kind.lower()
    if k in TYPES:
        return k
    if k in TYPE_ALIASES:
        return TYPE_ALIASES[k]
    import difflib

    close = difflib.get_close_matches(k, list(TYPES) + ["catalog"], n=1)
    raise UserError(f"unknown resource type '{kind}'" + (f"; did you mean '{close[0]}'?" if close else ""),
                    hint=f"types: {', '.join(TYPES)}, and `get catalog`")


def _read_records(state_dir: Path):
    from reconciler.engine.operations import read_records

    return read_records(state_dir)[0]


def get_resources(state_dir: Path, kind: str | None, name: str | None, workspace: str | None, output: str) -> int:
    type_ = _resolve_kind(kind)
    records = _read_records(state_dir)
    rows = [r for r in records.values()
            if (type_ is None or r.type == type_) and (name is None or r.name == name)
            and (workspace is None or r.workspace == workspace)]
    rows.sort(key=lambda r: (r.type, r.workspace or "", r.name))
    if name is not None and not rows:
        where = f" in workspace '{workspace}'" if workspace else ""
        raise UserError(f"no {type_ or 'resource'} named '{name}'{where} is recorded in {state_dir}")
    data = [_record_json(r) for r in rows]
    if output == "json":
        _out().json(data[0] if name is not None and len(data) == 1 else data)
    elif output == "yaml":
        import yaml

        payload = data[0] if name is not None and len(data) == 1 else data
        sys.stdout.write(yaml.safe_dump(payload, sort_keys=False, default_flow_style=False))
    else:
        from reconciler.cli.render import table

        cols = ["TYPE", "NAME", "WORKSPACE", "PHASE", "HEALTH", "COMMIT", "AGE", "MESSAGE"]
        table(_out(), cols, [[r.type, r.name, r.workspace or "-", r.phase, HEALTH.get(r.phase, "Unknown"),
                              (r.commit or "worktree")[:8] if r.hash else "-", age(r.applied_at or r.updated_at),
                              (r.message or "")[:80]] for r in rows],
              empty=f"No resources recorded in {state_dir}." + ("" if records else " Run `reconciler apply` first."))
    return 0


def _record_json(r) -> dict:
    from reconciler.core.redact import redact

    return {"id": r.id, "type": r.type, "name": r.name, "workspace": r.workspace, "phase": r.phase,
            "health": HEALTH.get(r.phase, "Unknown"), "message": r.message, "commit": r.commit, "file": r.file,
            "hash": r.hash, "depends_on": list(r.depends_on), "bundle": r.bundle, "prune": r.prune,
            "outputs": redact(r.outputs or {}), "created_at": str(r.created_at) if r.created_at else None,
            "updated_at": str(r.updated_at) if r.updated_at else None,
            "applied_at": str(r.applied_at) if r.applied_at else None, "spec": redact(r.spec) if r.spec else None}


def get_catalog(state_dir: Path, name: str | None, workspace: str | None, output: str) -> int:
    from reconciler.store.state import StateStore

    with StateStore.open(Path(state_dir), read_only=True) as store:
        datasets = store.catalog.datasets(workspace=workspace)
        if name:
            datasets = [d for d in datasets if d["address"] == name or d["address"].endswith("/" + name)]
            if not datasets:
                raise UserError(f"no dataset '{name}' in the catalog of {state_dir}")
        for d in datasets:
            d["columns"] = store.catalog.columns(d["address"])
        products = store.catalog.dataproducts() if not name else []
    if output in ("json", "yaml"):
        payload = {"datasets": datasets, "dataproducts": products}
        if output == "json":
            _out().json(payload)
        else:
            import yaml

            sys.stdout.write(yaml.safe_dump(json.loads(json.dumps(payload, default=str)), sort_keys=False))
        return 0
    from reconciler.cli.render import table

    out = _out()
    if name and len(datasets) == 1:
        d = datasets[0]
        out.line(f"{d['address']}  ({d.get('kind') or '-'}, {d.get('row_count') if d.get('row_count') is not None else '?'} rows, "
                 f"owner {d.get('owner_resource') or '-'})")
        table(out, ["COLUMN", "TYPE", "TAGS"], [[c["name"], c["type"], ",".join(c.get("tags") or [])]
                                                for c in d["columns"]])
        return 0
    table(out, ["DATASET", "KIND", "ROWS", "COLUMNS", "OWNER", "UPDATED"],
          [[d["address"], d.get("kind") or "-", "-" if d.get("row_count") is None else str(d["row_count"]),
            str(len(d["columns"])), d.get("owner_resource") or "-", age(d.get("updated_at"))] for d in datasets],
          empty="The catalog is empty. Apply depots and run workflows to fill it.")
    if products:
        out.line()
        table(out, ["DATAPRODUCT", "DOMAIN", "OWNER"], [[p["name"], p.get("domain") or "-", p.get("owner") or "-"]
                                                        for p in products])
    return 0


def run_delete(target, kind, name, file_: Path | None, workspace, cascade: bool, auto_approve: bool, output: str) -> int:
    from reconciler.core import resources as models
    from reconciler.core.ids import DEFAULT_WORKSPACE, make_id
    from reconciler.engine import operations

    if file_ is not None:
        if kind or name:
            raise UserError("give either TYPE NAME or -f FILE, not both")
        ids = operations.ids_in_file(file_)
    else:
        if not kind or not name:
            raise UserError("delete needs TYPE NAME (e.g. `reconciler delete workflow daily -w payments`) or -f FILE")
        type_ = _resolve_kind(kind)
        if type_ is None:
            raise UserError("delete needs one resource type")
        scoped = models.TYPES[type_].scope == "workspace"
        if workspace and not scoped:
            raise UserError(f"{type_} is not workspace-scoped; drop -w")
        ids = [make_id(type_, name, (workspace or DEFAULT_WORKSPACE) if scoped else None)]
    out = _out()
    quiet = output == "json"

    def confirm(plan) -> bool:
        if not quiet:
            for a in plan.actions:
                out.line(f"  - {a.id}  ({a.reason})", "red")
        if auto_approve:
            return True
        if not sys.stdin.isatty():
            raise UserError("delete needs --auto-approve when not run from a terminal")
        return click.prompt("Delete these resources? Only 'yes' will be accepted", default="",
                            show_default=False).strip() == "yes"

    plan, result = operations.delete_resources(target, ids, cascade=cascade, confirm=confirm)
    if result is None:
        out.line("Delete cancelled; nothing was changed.")
        return 1
    if quiet:
        out.json({"ok": result.ok, "results": [r.to_json() for r in result.results]})
    else:
        for r in result.results:
            out.line(f"  {r.id}: {r.phase}" + (f" ({r.message})" if r.message else ""),
                     "red" if r.phase not in ("Deleted",) else None)
        out.line("Deleted." if result.ok else "Delete finished with failures.", "green" if result.ok else "red")
        out.line("Note: resources still defined in git are created again by the next apply; remove them from git "
                 "to keep them deleted.")
    return 0 if result.ok else 1
