"""The services the daemon serves: their applied records, read from the state, with token digests.

`ServiceTable` re-reads the service records (and the secrets their tokens name, and their
datasets' catalog columns) when state.duckdb or its WAL changed on disk, a stat per request,
or at least every RECHECK_SECONDS (a token file may be rotated without any state change).
Token values are kept only as SHA-256 digests and never logged; a token whose secret has no
value is refused and the reason logged without it.
"""
from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.diagnostics import UserError
from reconciler.providers.service import service_path

log = logging.getLogger("reconciler.daemon.data")

RECHECK_SECONDS = 30.0


@dataclass(frozen=True)
class ServedQuery:
    name: str
    sql: str  # the service's SQL with its dataset names rewritten to their addresses
    params: dict[str, str]  # name -> string | int | float | bool | date


@dataclass(frozen=True)
class ServedService:
    workspace: str
    name: str
    description: str | None
    owner: str | None
    datasets: dict[str, str]  # name in the URL -> address
    queries: dict[str, ServedQuery]
    formats: tuple[str, ...]
    tokens: tuple[tuple[str, bytes], ...] = ()  # (consumer, sha256 of its token)
    columns: dict[str, list[str]] = field(default_factory=dict)  # address -> columns in the catalog

    @property
    def path(self) -> str:
        return service_path(self.workspace, self.name)

    def consumer(self, token: str) -> str | None:
        """The consumer this token belongs to; every token of the service is compared."""
        given = hashlib.sha256(token.encode()).digest()
        found = None
        for consumer, digest in self.tokens:
            if hmac.compare_digest(given, digest) and found is None:
                found = consumer
        return found


def service_sql(sql: str, datasets: dict[str, str]) -> str:
    """A service query's SQL with each table named like one of the service's datasets rewritten to that
    dataset's quoted address, so the query engine sees the dataset it governs (CTEs keep their names)."""
    import sqlglot
    from sqlglot import exp

    try:
        tree = sqlglot.parse_one(sql, dialect="duckdb")
    except sqlglot.errors.SqlglotError:
        return sql  # the engine refuses it with its own message
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    by_name = {k.lower(): v for k, v in datasets.items()}
    for table in list(tree.find_all(exp.Table)):
        name = table.name.lower() if isinstance(table.this, exp.Identifier) else ""
        if name in by_name and name not in ctes and not table.args.get("db") and not table.args.get("catalog"):
            alias = table.alias or table.name
            table.replace(exp.Table(this=exp.to_identifier(by_name[name], quoted=True),
                                    alias=exp.TableAlias(this=exp.to_identifier(alias))))
    return tree.sql(dialect="duckdb")


class ServiceTable:
    """The services the state records, with their token digests and their datasets' catalog columns.

    Re-read when state.duckdb or its WAL changed (their size and mtime), or after RECHECK_SECONDS.
    """

    def __init__(self, state_dir: Path, environ: dict[str, str] | None = None):
        self.state_dir = Path(state_dir)
        self.environ = environ
        self._lock = threading.Lock()
        self._key: tuple | None = None
        self._read_at = 0.0
        self._services: dict[tuple[str, str], ServedService] = {}

    def _signature(self) -> tuple:
        out = []
        for name in ("state.duckdb", "state.duckdb.wal"):
            try:
                st = os.stat(self.state_dir / name)
                out.append((st.st_mtime_ns, st.st_size))
            except FileNotFoundError:
                out.append(None)
        return tuple(out)

    def services(self) -> dict[tuple[str, str], ServedService]:
        key = self._signature()
        if key == self._key and time.monotonic() - self._read_at < RECHECK_SECONDS:
            return self._services
        with self._lock:
            if key != self._key or time.monotonic() - self._read_at >= RECHECK_SECONDS:
                self._services = self._read()
                self._key, self._read_at = key, time.monotonic()
        return self._services

    def get(self, workspace: str, name: str) -> ServedService | None:
        return self.services().get((workspace, name))

    def _read(self) -> dict[tuple[str, str], ServedService]:
        from reconciler.store.state import StateStore

        try:
            store = StateStore.open(self.state_dir, read_only=True)
        except UserError as e:  # another process holds the state: keep serving what we knew
            log.warning("cannot read services from the state: %s", e.message)
            return self._services
        try:
            records = store.records()
            out = {}
            for r in records.values():
                if r.type != "service" or not r.spec or r.phase == "Deleting":
                    continue
                section = r.spec.get("service") or {}
                datasets = {d["name"]: d["dataset"] for d in section.get("datasets") or []}
                columns = {a: [c["name"] for c in store.catalog.columns(a)] for a in datasets.values()}
                queries = {q["name"]: ServedQuery(q["name"], service_sql(q["sql"], datasets), dict(q.get("params") or {}))
                           for q in section.get("queries") or []}
                workspace = r.workspace or "public"
                out[(workspace, r.name)] = ServedService(
                    workspace, r.name, r.spec.get("description"), r.spec.get("owner"), datasets, queries,
                    tuple(section.get("formats") or ("json", "csv")),
                    self._tokens(records, workspace, r.name, section.get("tokens") or []), columns)
            return out
        finally:
            store.close()

    def _tokens(self, records, workspace: str, service: str, tokens: list[dict]) -> tuple[tuple[str, bytes], ...]:
        from reconciler.core.ids import make_id
        from reconciler.providers.secret import read_secret_source

        environ = os.environ if self.environ is None else self.environ
        out = []
        for t in tokens:
            record = records.get(make_id("secret", t["secret"], workspace))
            spec = record.spec if record is not None else None
            if not spec:
                log.warning("service %s/%s: token '%s': secret '%s' is not applied; that token is refused",
                            workspace, service, t["name"], t["secret"])
                continue
            value, err = read_secret_source(f"{workspace}/{t['secret']}", (spec.get("secret") or {}).get("from"),
                                            dict(environ))
            if err:  # the message names the variable or file, never a value
                log.warning("service %s/%s: token '%s': %s; that token is refused", workspace, service, t["name"], err)
                continue
            out.append((t["name"], hashlib.sha256(value.encode()).digest()))
        return tuple(out)
