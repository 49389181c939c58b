"""Drift: what the platform looks like now against what was applied.

- a depot's datasets and column types, re-introspected, against the catalog entries
  its last apply recorded;
- the lake tables a workflow owns: gone, or with other columns than its last run wrote.
Returns {resource id: a human sentence}; an empty dict means no drift.
"""
from __future__ import annotations

from pathlib import Path

from reconciler.core.record import READY, Record


def detect(ctx, records: dict[str, Record]) -> dict[str, str]:
    from reconciler.providers.registry import get_provider

    store = ctx.store
    drift: dict[str, str] = {}
    for rid, rec in sorted(records.items()):
        if rec.phase != READY or not rec.spec:
            continue
        if rec.type == "depot":
            seen = get_provider("depot").observe(ctx, rec)
            if not seen:
                continue
            if "error" in seen:
                drift[rid] = f"unreachable: {seen['error']}"
                continue
            recorded = {d["address"].rsplit("/", 1)[-1]: [[c["name"], c["type"]] for c in store.catalog.columns(d["address"])]
                        for d in store.catalog.datasets(owner=rid)}
            changed = _compare(recorded, seen["datasets"])
            if changed:
                drift[rid] = changed
        elif rec.type == "workflow":
            owned = store.catalog.datasets(owner=rid)
            if owned:
                message = _lake_drift(ctx.lake_path, owned, store)
                if message:
                    drift[rid] = message
    return drift


def _compare(recorded: dict[str, list], seen: dict[str, list]) -> str:
    parts = []
    gone = sorted(set(recorded) - set(seen))
    new = sorted(set(seen) - set(recorded))
    if gone:
        parts.append("datasets gone: " + ", ".join(gone))
    if new:
        parts.append("new datasets: " + ", ".join(new))
    for name in sorted(set(recorded) & set(seen)):
        if [list(c) for c in recorded[name]] != [list(c) for c in seen[name]]:
            parts.append(f"columns of {name} changed")
    return "; ".join(parts)


def _lake_drift(lake_path: Path, owned: list[dict], store) -> str:
    import duckdb

    if not Path(lake_path).exists():
        return "the lake is gone"
    from reconciler.store import lakegate

    parts = []
    lakegate.enter(lake_path)  # this process's query database steps aside while we look
    lakegate.drop_held(lake_path)  # and a write connection kept open (a read-only one cannot join it)
    try:
        con = duckdb.connect(str(lake_path), read_only=True)
    except BaseException:
        lakegate.leave(lake_path)
        raise
    try:
        for d in owned:
            ws, _, table = d["address"][len("lake://"):].partition("/")
            rows = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                               "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                               [ws, table]).fetchall()
            if not rows:
                parts.append(f"table {d['address']} is gone")
                continue
            recorded = [(c["name"], c["type"]) for c in store.catalog.columns(d["address"])]
            if recorded and [tuple(r) for r in rows] != recorded:
                parts.append(f"columns of {d['address']} changed")
    finally:
        con.close()
        lakegate.leave(lake_path)
    return "; ".join(parts)
