"""The catalog: datasets with their columns, and registered data products.

It lives in the state database beside the resource records (`store.catalog`).
Each dataset is owned by the resource that found or writes it (a depot, a
workflow), so re-introspecting a depot replaces exactly what it owned before.
Catalog writes do not move the state serial: they describe the data, not the
desired state a saved plan was made against.

A dataset is given as a dict:
    {"address": "depot://raw/transactions", "kind": "file", "workspace": None,
     "format": "csv", "location": "/abs/data/transactions.csv", "row_count": 10,
     "description": None, "tags": [], "columns": [{"name": "id", "type": "BIGINT", "tags": []}]}
`kind` is where the data lives (file, duckdb, sqlite, postgres, lake); it defaults from the address.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterable

from reconciler.store.bulk import insert_rows

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.store.state import StateStore

_DATASET_COLUMNS = ("address", "kind", "owner_resource", "workspace", "format", "location", "row_count",
                    "description", "tags", "updated_at", "owner", "last_run")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _tags(value) -> str:
    return json.dumps(sorted(set(value or ())))


def _dataset_dict(row: tuple) -> dict:
    d = dict(zip(_DATASET_COLUMNS, row))
    d["tags"] = json.loads(d["tags"]) if d["tags"] else []
    return d


class Catalog:
    def __init__(self, store: "StateStore"):
        self._store = store

    # ---- datasets ------------------------------------------------------------------------

    def replace_owner_datasets(self, owner_id: str, datasets: list[dict]) -> None:
        """Make `datasets` exactly what `owner_id` owns, in one transaction. An address another
        owner held before moves to this one."""
        self._put(owner_id, datasets, replace=True)

    def upsert_datasets(self, owner_id: str, datasets: list[dict]) -> None:
        """Add or replace these datasets, leaving the owner's others alone (a workflow writing one
        output at a time)."""
        self._put(owner_id, datasets, replace=False)

    def drop_owner(self, owner_id: str) -> None:
        with self._store._transaction(_now(), bump_serial=False) as (conn, _):
            conn.execute("DELETE FROM columns WHERE address IN "
                         "(SELECT address FROM datasets WHERE owner_resource = ?)", [owner_id])
            conn.execute("DELETE FROM datasets WHERE owner_resource = ?", [owner_id])

    def drop_dataset(self, address: str) -> None:
        with self._store._transaction(_now(), bump_serial=False) as (conn, _):
            conn.execute("DELETE FROM columns WHERE address = ?", [address])
            conn.execute("DELETE FROM datasets WHERE address = ?", [address])

    def datasets(self, workspace: str | None = None, owner: str | None = None) -> list[dict]:
        sql = f"SELECT {', '.join(_DATASET_COLUMNS)} FROM datasets WHERE 1 = 1"
        params: list = []
        if workspace is not None:
            sql += " AND workspace = ?"
            params.append(workspace)
        if owner is not None:
            sql += " AND owner_resource = ?"
            params.append(owner)
        with self._store._lock:
            rows = self._store._conn.execute(sql + " ORDER BY address", params).fetchall()
        return [_dataset_dict(r) for r in rows]

    def dataset(self, address: str) -> dict | None:
        with self._store._lock:
            row = self._store._conn.execute(
                f"SELECT {', '.join(_DATASET_COLUMNS)} FROM datasets WHERE address = ?", [address]).fetchone()
        return _dataset_dict(row) if row else None

    def columns(self, address: str) -> list[dict]:
        return self.all_columns(address).get(address, [])

    def all_columns(self, address: str | None = None) -> dict[str, list[dict]]:
        """Columns by dataset address, in order: every dataset's in one query (or one dataset's)."""
        where, params = ("WHERE address = ? ", [address]) if address is not None else ("", [])
        return self._columns_where(where, params)

    def columns_of(self, addresses: Iterable[str]) -> dict[str, list[dict]]:
        """Columns of these datasets by address, in order, in one query (a query per dataset costs ~1-2 ms:
        `get catalog` of 2,000 datasets took 3.5 s that way)."""
        wanted = sorted(set(addresses))
        if not wanted:
            return {}
        return self._columns_where("WHERE address IN (SELECT unnest(?::VARCHAR[])) ", [wanted])

    def _columns_where(self, where: str, params: list) -> dict[str, list[dict]]:
        with self._store._lock:
            rows = self._store._conn.execute(
                f"SELECT address, name, type, ordinal, tags FROM columns {where}ORDER BY address, ordinal",
                params).fetchall()
        out: dict[str, list[dict]] = {}
        for a, n, t, o, tags in rows:
            out.setdefault(a, []).append({"address": a, "name": n, "type": t, "ordinal": o,
                                          "tags": json.loads(tags) if tags and tags != "[]" else []})
        return out

    def _put(self, owner_id: str, datasets: list[dict], replace: bool, conn=None) -> None:
        now = _now()
        by_address = {d["address"]: d for d in datasets}  # one row per address: the last wins
        addresses = list(by_address)
        ds_rows = []
        col_rows = []
        for address, d in by_address.items():
            kind = d.get("kind") or address.partition("://")[0]
            ds_rows.append((address, kind, owner_id, d.get("workspace"), d.get("format"), d.get("location"),
                            d.get("row_count"), d.get("description"), _tags(d.get("tags")), now, d.get("owner"),
                            d.get("last_run")))
            for ordinal, col in enumerate(d.get("columns") or (), start=1):
                col_rows.append((address, col["name"], col.get("type"), ordinal, _tags(col.get("tags"))))
        if conn is not None:
            self._write(conn, owner_id, addresses, ds_rows, col_rows, replace)
            return
        with self._store._transaction(now, bump_serial=False) as (conn, _):
            self._write(conn, owner_id, addresses, ds_rows, col_rows, replace)

    def put_in(self, conn, owner_id: str, datasets: list[dict]) -> None:
        """Upsert datasets inside a transaction the caller holds (a job's results land in one)."""
        self._put(owner_id, datasets, replace=False, conn=conn)

    @staticmethod
    def _write(conn, owner_id: str, addresses: list, ds_rows: list, col_rows: list, replace: bool) -> None:
        if replace:
            conn.execute("DELETE FROM columns WHERE address IN "
                         "(SELECT address FROM datasets WHERE owner_resource = ?)", [owner_id])
            conn.execute("DELETE FROM datasets WHERE owner_resource = ?", [owner_id])
        conn.execute("DELETE FROM columns WHERE list_contains($1::VARCHAR[], address)", [addresses])
        conn.execute("DELETE FROM datasets WHERE list_contains($1::VARCHAR[], address)", [addresses])
        insert_rows(conn, "datasets", _DATASET_COLUMNS, ("VARCHAR",) * 6 + ("BIGINT",) + ("VARCHAR",) * 5, ds_rows)
        insert_rows(conn, "columns", ("address", "name", "type", "ordinal", "tags"),
                    ("VARCHAR", "VARCHAR", "VARCHAR", "INTEGER", "VARCHAR"), col_rows)

    # ---- data products -------------------------------------------------------------------

    def upsert_dataproduct(self, name: str, *, domain: str | None, owner: str | None, spec: dict) -> None:
        now = _now()
        with self._store._transaction(now, bump_serial=False) as (conn, _):
            conn.execute(
                "INSERT INTO dataproducts VALUES (?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "domain = excluded.domain, owner = excluded.owner, spec = excluded.spec, "
                "updated_at = excluded.updated_at",
                [name, domain, owner, json.dumps(spec, sort_keys=True, default=str), now])

    def drop_dataproduct(self, name: str) -> None:
        with self._store._transaction(_now(), bump_serial=False) as (conn, _):
            conn.execute("DELETE FROM dataproducts WHERE name = ?", [name])

    def dataproducts(self) -> list[dict]:
        with self._store._lock:
            rows = self._store._conn.execute(
                "SELECT name, domain, owner, spec, updated_at FROM dataproducts ORDER BY name").fetchall()
        return [{"name": n, "domain": d, "owner": o, "spec": json.loads(s) if s else {}, "updated_at": u}
                for n, d, o, s, u in rows]

    def dataproduct(self, name: str) -> dict | None:
        return next((p for p in self.dataproducts() if p["name"] == name), None)
