"""Read-only SQL over lake and depot datasets, as policies allow one subject to see them.

`QueryEngine.run` is the single way data leaves the platform: `reconciler query --as`, the
services and `/api/v1/query` all call it. Per query: the guard checks the SQL (layer 1), every
dataset it names is decided by the policies for this subject, each reference is rewritten onto
the view of that grant, and sqlglot's rendering runs on a fresh cursor of the locked-down
database (layer 2) with a time limit.

The database is rebuilt when the lake or the state file changes on disk (a stat per query
tells), so answers follow applies and workflow runs without a restart.
"""
from __future__ import annotations

import base64
import csv
import datetime as dt
import decimal
import difflib
import io
import os
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import duckdb
from sqlglot import exp

from reconciler.core.access import Grant, PolicySet, Subject
from reconciler.core.diagnostics import UserError
from reconciler.query import guard
from reconciler.query.guard import QueryRefused
from reconciler.query.lakedb import LakeDatabase, Snapshot, ident
from reconciler.query.subjects import Directory
from reconciler.store import lakegate

__all__ = ["QueryEngine", "QueryResult", "QueryRefused", "AccessDenied", "LakeBusy"]

MAX_ROWS = 10_000
TIMEOUT = 30.0


class AccessDenied(UserError):
    """The subject may not read a dataset the query names (HTTP 403)."""


class LakeBusy(UserError):
    """The lake cannot be read right now (a workflow is writing it); retry shortly (HTTP 503)."""


def _json_value(v):
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return base64.b64encode(bytes(v)).decode()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    return str(v)


@dataclass
class QueryResult:
    columns: list[str]
    types: list[str]
    rows: list[tuple]
    truncated: bool

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.columns, r)) for r in self.rows]

    def to_json_rows(self) -> list[dict]:
        cols = self.columns
        return [{c: _json_value(v) for c, v in zip(cols, r)} for r in self.rows]

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(self.columns)
        for r in self.rows:
            w.writerow(["" if v is None else v for v in r])
        return buf.getvalue()


class _Watchdog:
    """One thread interrupting every query past its deadline (a timer thread per query cost ~2 ms)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._active: dict[int, tuple[float, object]] = {}
        self._next = 0
        self._thread: threading.Thread | None = None

    def watch(self, cursor, timeout: float) -> int:
        with self._lock:
            self._next += 1
            self._active[self._next] = (time.monotonic() + timeout, cursor)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="query-watchdog", daemon=True)
                self._thread.start()
            return self._next

    def done(self, ticket: int) -> None:
        with self._lock:
            self._active.pop(ticket, None)

    def _loop(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self._lock:
                due = [(t, c) for t, (d, c) in self._active.items() if d <= now]
                for t, c in due:
                    try:
                        c.interrupt()
                    except Exception:  # the cursor finished and closed in between
                        pass


_WATCHDOG = _Watchdog()


def _salt(state_dir: Path) -> str:
    """A per-instance secret for hash masks, created once beside the state (never in git or output)."""
    path = Path(state_dir) / "mask-salt"
    try:
        return path.read_text().strip()
    except OSError:
        pass
    value = secrets.token_hex(16)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(value + "\n")
        return value
    except FileExistsError:
        return path.read_text().strip()


def read_snapshot(state_dir: Path) -> Snapshot:
    """Catalog datasets with owner teams and column tags, applied policies and depots, from the state."""
    from reconciler.store.state import StateStore

    store = StateStore.open(state_dir, read_only=True)
    try:
        records = store.records()
        columns = store.catalog.all_columns()
        datasets = {}
        for d in store.catalog.datasets():
            owner_rec = records.get(d.get("owner_resource") or "")
            d = dict(d)
            d["owner_team"] = ((owner_rec.spec or {}).get("owner") if owner_rec else None)
            d["columns"] = {c["name"]: list(c.get("tags") or []) for c in columns.get(d["address"], [])}
            datasets[d["address"]] = d
    finally:
        store.close()
    policies = sorted((r.name, r.spec) for r in records.values() if r.type == "policy" and r.spec and r.phase == "Ready")
    depots = {r.name: r.spec for r in records.values() if r.type == "depot" and r.spec}
    commits = {r.name: r.commit for r in records.values() if r.type == "depot"}
    return Snapshot(datasets, policies, depots, commits)


class QueryEngine:
    def __init__(self, state_dir: Path, directory: Directory | None = None, environ: dict | None = None,
                 timeout: float = TIMEOUT):
        self.state_dir = Path(state_dir)
        self.directory = directory or Directory.empty()
        self.environ = dict(os.environ if environ is None else environ)
        self.timeout = timeout
        self._db: LakeDatabase | None = None
        self._stamp: tuple | None = None
        self._policies = PolicySet()
        self._build_lock = threading.Lock()
        self._wanted_depots: set[str] = set()  # depot datasets some query named: copied into each rebuild
        self._sql_cache: OrderedDict = OrderedDict()

    # -- the database -------------------------------------------------------------------------
    def _current_stamp(self) -> tuple:
        from reconciler.store.state import file_stamp

        return file_stamp(self.state_dir) + file_stamp(self.state_dir, "lake.duckdb")

    def database(self, want: str | None = None) -> LakeDatabase:
        """The current locked database; rebuilt when the state or lake changed on disk, or when `want`, a
        depot dataset it has not copied yet, is asked for (depots are copied only once a query needs
        them: an instance of thousands of depots would otherwise copy them all on every rebuild)."""
        stamp = self._current_stamp()
        db = self._db
        if db is not None and db.con is not None and stamp == self._stamp and want is None:
            return db
        with self._build_lock:
            db = self._db
            if want is not None:
                self._wanted_depots.add(want)
            if db is not None and db.con is not None and stamp == self._stamp and \
                    (want is None or want in db.tables or want in db.unreadable):
                return db
            if lakegate.writing_now(self.state_dir / "lake.duckdb"):
                raise LakeBusy("a workflow is writing the lake right now", hint="retry in a few seconds")
            try:
                snapshot = read_snapshot(self.state_dir)
                new = LakeDatabase(self.state_dir, snapshot, _salt(self.state_dir), self.environ,
                                   depots=frozenset(self._wanted_depots))
            except lakegate.LakeBusyError as exc:
                raise LakeBusy(str(exc), hint="retry in a few seconds") from None
            if db is not None:
                db.reader.retire()
            self._db, self._stamp = new, stamp
            self._policies = PolicySet.from_specs(snapshot.policies)
            self._sql_cache.clear()
            return new

    def close(self) -> None:
        if self._db is not None:
            self._db.reader.retire()
            self._db = None

    # -- deciding -----------------------------------------------------------------------------
    def grant(self, subject: Subject, address: str, db: LakeDatabase | None = None) -> Grant:
        db = db or self.database()
        d = db.snapshot.datasets.get(address)
        if d is None:
            return Grant(address, False, f"{address} is not in the catalog")
        tags = {k.lower(): v for k, v in d["columns"].items()}
        table = db.tables.get(address)
        unknown = [c for c, _ in table.columns if c.lower() not in tags] if table and tags else []
        if unknown:  # fail closed: a run wrote new columns, their tags reach the catalog with its findings
            return Grant(address, False, f"{address} has columns the catalog does not list yet "
                                         f"({', '.join(unknown)}): a workflow run is writing it; retry when it ends")
        columns = {c: tags.get(c.lower(), []) for c, _ in table.columns} if table else d["columns"]
        return self._policies.decide(subject, address, d.get("owner_team"), columns)

    def readable(self, subject: Subject) -> dict[str, Grant]:
        """Every catalog dataset this subject may read, with its grant."""
        db = self.database()
        grants = {a: self.grant(subject, a, db) for a in db.snapshot.datasets}
        return {a: g for a, g in grants.items() if g.allowed}

    def _resolve_name(self, subject: Subject, name: str, db: LakeDatabase) -> Grant:
        datasets = db.snapshot.datasets
        if name in datasets:
            candidates = [name]
        else:
            candidates = [a for a in datasets if a.rsplit("/", 1)[-1].lower() == name.lower()]
        if not candidates:
            readable = sorted(a.rsplit("/", 1)[-1] for a, g in self.readable(subject).items())
            close = difflib.get_close_matches(name, readable, n=1)
            raise QueryRefused(f"no dataset named {name}" + (f"; did you mean {close[0]}?" if close else ""),
                               hint="name a dataset by its table name or its quoted address, e.g. "
                                    "FROM \"lake://WS/TABLE\"; `reconciler get catalog` lists them")
        grants = [self.grant(subject, a, db) for a in candidates]
        allowed = [g for g in grants if g.allowed]
        if len(allowed) > 1:
            raise QueryRefused(f"{name} is ambiguous: {', '.join(g.dataset for g in allowed)}",
                               hint=f"name it by its address, e.g. FROM \"{allowed[0].dataset}\"")
        if not allowed:
            why = "; ".join(f"{g.dataset}: {g.reason}" for g in grants)
            raise AccessDenied(f"{subject.user} may not read {why}",
                               hint="ask the dataset's owner team for an access: allow policy")
        g = allowed[0]
        return g

    # -- running ------------------------------------------------------------------------------
    def prepare(self, subject: Subject, sql: str) -> tuple[str, LakeDatabase]:
        """The SQL that will run for `subject`: checked, every dataset reference on its policy view."""
        db = self.database()
        key = (sql, subject)
        cached = self._sql_cache.get(key)
        if cached is not None and cached[1] is db:
            self._sql_cache.move_to_end(key)
            return cached[0], db
        checked = guard.check(sql)
        grants = {name: self._resolve_name(subject, name, db) for name in sorted(checked.names)}
        missing = [g.dataset for g in grants.values() if g.dataset not in db.tables and g.dataset not in db.unreadable]
        for address in missing:  # a depot dataset no query needed before: copy it in (a rebuild)
            db = self.database(want=address)
        if missing:
            grants = {name: self._resolve_name(subject, name, db) for name in sorted(checked.names)}
        views = {}
        for name in sorted(checked.names):
            g = grants[name]
            if g.dataset not in db.tables:
                raise QueryRefused(f"{g.dataset} cannot be read: {db.unreadable.get(g.dataset, 'not loaded')}")
            try:
                views[name] = db.view_for(g)
            except duckdb.Error as exc:  # e.g. a policy filter naming a column this dataset lacks
                raise AccessDenied(f"the policies on {g.dataset} cannot be applied for {subject.user}, so it is "
                                   f"not readable: {str(exc).splitlines()[0]}",
                                   hint=f"fix policy {', '.join(g.policies)}") from None
        for node in checked.tables:
            original = node.name
            node.set("this", exp.to_identifier(views[original], quoted=True))
            if not node.alias:
                node.set("alias", exp.TableAlias(this=exp.to_identifier(original, quoted=True)))
        final = checked.tree.sql(dialect="duckdb", comments=False)
        self._sql_cache[key] = (final, db)
        if len(self._sql_cache) > 512:
            self._sql_cache.popitem(last=False)
        return final, db

    def run(self, subject: Subject, sql: str, params: dict | None = None, limit: int | None = None,
            offset: int = 0) -> QueryResult:
        final, db = self.prepare(subject, sql)
        cap = MAX_ROWS if limit is None else max(0, min(int(limit), MAX_ROWS))
        wrapped = f"SELECT * FROM ({final}) AS q LIMIT {cap + 1} OFFSET {max(0, int(offset))}"
        try:
            with db.reader.use():
                cur = db.con.cursor()
                ticket = _WATCHDOG.watch(cur, self.timeout)
                try:
                    rel = cur.execute(wrapped, params or None)
                    rows = rel.fetchall()
                    desc = rel.description or []
                finally:
                    _WATCHDOG.done(ticket)
                    cur.close()
        except lakegate.LakeBusyError as exc:
            raise LakeBusy(str(exc), hint="retry in a few seconds") from None
        except duckdb.InterruptException:
            raise QueryRefused(f"the query ran longer than {self.timeout:g} s and was stopped",
                               hint="narrow it with WHERE or LIMIT") from None
        except duckdb.Error as exc:
            raise QueryRefused(f"the query failed: {str(exc).splitlines()[0]}") from None
        columns = [d[0] for d in desc]
        types = [str(d[1]) for d in desc]
        return QueryResult(columns, types, rows[:cap], truncated=len(rows) > cap)

    def dataset_sql(self, name: str, columns: list[str] | None = None,
                    where: dict[str, str] | None = None) -> tuple[str, dict]:
        """A SELECT over one dataset for services: chosen columns, equality filters as parameters.
        Rows come in the table's insertion order, which DuckDB keeps for a plain scan
        (`preserve_insertion_order`, on by default and locked here): pages are stable until a workflow
        rewrites the table, without sorting the whole dataset for every page."""
        cols = ", ".join(ident(c) for c in columns) if columns else "*"
        params, conds = {}, []
        for i, (col, value) in enumerate(sorted((where or {}).items())):
            params[f"p{i}"] = value
            conds.append(f"CAST({ident(col)} AS VARCHAR) = $p{i}")
        sql = f"SELECT {cols} FROM {ident(name)}" + (f" WHERE {' AND '.join(conds)}" if conds else "")
        return sql, params
