"""Drift: what the platform looks like now against what was applied.

- a depot's datasets and column types, re-introspected, against the catalog entries
  its last apply recorded;
- the lake tables a workflow owns: gone, or with other columns than its last run wrote.
Returns {resource id: a human sentence}; an empty dict means no drift.
"""
from __future__ import annotations

from pathlib import Path

from reconciler.core.record import READY, Record


class LakeLook:
    """A read-only connection to the lake for a run of drift checks: opened on first use, closed by close().
    Opening a lake of a few thousand tables costs ~80-100 ms and closing it ~35 ms, a workflow's own look
    ~5 ms: one connection per workflow made a drift pass over 200 workflows take 26 s. While it is open
    this process's lake readers step aside (store/lakegate.py), so it is held for one slice of a pass."""

    def __init__(self, lake_path: Path):
        self.lake_path = Path(lake_path)
        self._con = None

    def connection(self):
        """The connection, or None when there is no lake."""
        if self._con is None:
            if not self.lake_path.exists():
                return None
            import duckdb

            from reconciler.store import lakegate

            lakegate.enter(self.lake_path)  # this process's query database steps aside while we look
            lakegate.drop_held(self.lake_path)  # and a write connection kept open (a read-only one cannot join it)
            try:
                self._con = duckdb.connect(str(self.lake_path), read_only=True)
            except BaseException:
                lakegate.leave(self.lake_path)
                raise
        return self._con

    def close(self) -> None:
        if self._con is not None:
            from reconciler.store import lakegate

            try:
                self._con.close()
            finally:
                self._con = None
                lakegate.leave(self.lake_path)

    def __enter__(self) -> "LakeLook":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def detect(ctx, records: dict[str, Record], look: LakeLook | None = None) -> dict[str, str]:
    """Drift of these records. `look`: a lake connection shared with other calls (else one for this call)."""
    if look is None:
        with LakeLook(ctx.lake_path) as own:
            return detect(ctx, records, own)
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
            owned = store.catalog.datasets(owner=rid)
            columns = store.catalog.columns_of(d["address"] for d in owned)
            recorded = {d["address"].rsplit("/", 1)[-1]: [[c["name"], c["type"]] for c in columns.get(d["address"], ())]
                        for d in owned}
            changed = _compare(recorded, seen["datasets"])
            if changed:
                drift[rid] = changed
        elif rec.type == "workflow":
            owned = store.catalog.datasets(owner=rid)
            if owned:
                message = _lake_drift(look, owned, store)
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


def _lake_drift(look: LakeLook, owned: list[dict], store) -> str:
    con = look.connection()
    if con is None:
        return "the lake is gone"
    parts = []
    recorded_columns = store.catalog.columns_of(d["address"] for d in owned)
    for d in owned:
        ws, _, table = d["address"][len("lake://"):].partition("/")
        rows = con.execute("SELECT column_name, data_type FROM information_schema.columns "
                           "WHERE table_schema = ? AND table_name = ? ORDER BY ordinal_position",
                           [ws, table]).fetchall()
        if not rows:
            parts.append(f"table {d['address']} is gone")
            continue
        recorded = [(c["name"], c["type"]) for c in recorded_columns.get(d["address"], ())]
        if recorded and [tuple(r) for r in rows] != recorded:
            parts.append(f"columns of {d['address']} changed")
    return "; ".join(parts)
