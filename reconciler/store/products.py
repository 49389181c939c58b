"""What the platform measured about data products (`store.products`): service probes, SLO results
and each product's health.

Written by the daemon's SLO evaluation (reconciler/products/slo.py), read by `get dataproduct`,
the API and STATUS.md. Like catalog and run writes, these do not move the state serial: they
describe the data, not the desired state a saved plan was made against. `slo_results` and
`service_checks` are histories; rows older than RETENTION_DAYS are pruned as new ones arrive so
a daemon evaluating every minute does not grow the state without bound.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Iterable

from reconciler.store.bulk import insert_rows
from reconciler.store.bulk import quoted as _quoted

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.store.state import StateStore

RETENTION_DAYS = 30  # longer than any window an SLO reasonably asks about

CHECK_COLUMNS = ("service_id", "at", "ok", "status", "detail")
RESULT_COLUMNS = ("product", "slo", "kind", "value", "target", "ok", "detail", "at")
HEALTH_COLUMNS = ("product", "state", "detail", "at")
_CHECK_TYPES = ("VARCHAR", "VARCHAR", "BOOLEAN", "INTEGER", "VARCHAR")
_RESULT_TYPES = ("VARCHAR", "VARCHAR", "VARCHAR", "DOUBLE", "DOUBLE", "BOOLEAN", "VARCHAR", "VARCHAR")
_HEALTH_TYPES = ("VARCHAR",) * 4


def _iso(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="microseconds")


class Products:
    def __init__(self, store: "StateStore"):
        self._store = store

    def _query(self, sql: str, params=()) -> list[tuple]:
        with self._store._lock:
            return self._store._conn.execute(sql, list(params)).fetchall()

    def _tx(self, now: datetime):
        return self._store._transaction(_iso(now), bump_serial=False)

    def names(self) -> list[str]:
        """The data products recorded as resources or registered in the catalog, without loading every record
        (an evaluation on a state with no data product stays cheap)."""
        rows = self._query("SELECT name FROM resources WHERE type = 'dataproduct' UNION SELECT name FROM dataproducts "
                           "ORDER BY 1")
        return [r[0] for r in rows]

    # ---- service probes --------------------------------------------------------------------
    def record_checks(self, checks: Iterable[dict], now: datetime) -> None:
        """Append probe results: dicts with service_id, at (datetime or ISO text), ok, status, detail."""
        rows = [(c["service_id"], c["at"] if isinstance(c["at"], str) else _iso(c["at"]), bool(c["ok"]),
                 c.get("status"), c.get("detail")) for c in checks]
        cutoff = _iso(now - timedelta(days=RETENTION_DAYS))
        with self._tx(now) as (conn, _):
            insert_rows(conn, "service_checks", CHECK_COLUMNS, _CHECK_TYPES, rows)
            conn.execute('DELETE FROM service_checks WHERE "at" < ?', [cutoff])

    def service_checks(self, service_id: str | None = None, since: datetime | None = None) -> list[dict]:
        """Probe results, oldest first."""
        sql = f"SELECT {_quoted(CHECK_COLUMNS)} FROM service_checks WHERE 1 = 1"
        params: list = []
        if service_id is not None:
            sql += " AND service_id = ?"
            params.append(service_id)
        if since is not None:
            sql += ' AND "at" >= ?'
            params.append(_iso(since))
        return [dict(zip(CHECK_COLUMNS, r)) for r in self._query(sql + ' ORDER BY "at", service_id', params)]

    # ---- SLO results and health -----------------------------------------------------------
    def record_evaluation(self, results: Iterable[dict], health: Iterable[dict], now: datetime) -> None:
        """One evaluation in one transaction: SLO result rows (RESULT_COLUMNS keys) are appended, each
        product's health (HEALTH_COLUMNS keys) replaces the one before, and the health of products
        that are no longer evaluated (deleted) is dropped."""
        result_rows = [(r["product"], r["slo"], r.get("kind"), r.get("value"), r.get("target"), bool(r["ok"]),
                        r.get("detail"), r["at"] if isinstance(r["at"], str) else _iso(r["at"])) for r in results]
        health_rows = [(h["product"], h["state"], h.get("detail"), h["at"] if isinstance(h["at"], str)
                        else _iso(h["at"])) for h in health]
        cutoff = _iso(now - timedelta(days=RETENTION_DAYS))
        with self._tx(now) as (conn, _):
            insert_rows(conn, "slo_results", RESULT_COLUMNS, _RESULT_TYPES, result_rows)
            conn.execute('DELETE FROM slo_results WHERE "at" < ?', [cutoff])
            products = [h[0] for h in health_rows]
            conn.execute("DELETE FROM dataproduct_health WHERE NOT list_contains($1::VARCHAR[], product)", [products])
            insert_rows(conn, "dataproduct_health", HEALTH_COLUMNS, _HEALTH_TYPES, health_rows,
                        "ON CONFLICT (product) DO UPDATE SET state = excluded.state, "
                        'detail = excluded.detail, "at" = excluded."at"')

    def latest_results(self, product: str | None = None) -> list[dict]:
        """The newest result of each (product, slo)."""
        where = "WHERE product = ?" if product is not None else ""
        rows = self._query(
            f"SELECT {_quoted(RESULT_COLUMNS)} FROM slo_results {where} "
            'QUALIFY row_number() OVER (PARTITION BY product, slo ORDER BY "at" DESC) = 1 ORDER BY product, slo',
            [product] if product is not None else [])
        return [dict(zip(RESULT_COLUMNS, r)) for r in rows]

    def results(self, product: str, slo: str | None = None, since: datetime | None = None) -> list[dict]:
        """The history of a product's SLO results, oldest first."""
        sql = f"SELECT {_quoted(RESULT_COLUMNS)} FROM slo_results WHERE product = ?"
        params: list = [product]
        if slo is not None:
            sql += " AND slo = ?"
            params.append(slo)
        if since is not None:
            sql += ' AND "at" >= ?'
            params.append(_iso(since))
        return [dict(zip(RESULT_COLUMNS, r)) for r in self._query(sql + ' ORDER BY "at", slo', params)]

    def health(self, product: str | None = None) -> list[dict]:
        where = "WHERE product = ?" if product is not None else ""
        rows = self._query(f"SELECT {_quoted(HEALTH_COLUMNS)} FROM dataproduct_health {where} ORDER BY product",
                           [product] if product is not None else [])
        return [dict(zip(HEALTH_COLUMNS, r)) for r in rows]
