"""The second layer of query enforcement: a locked-down DuckDB database holding only what policies let out.

Built from a snapshot of the state (catalog, policies, depots) and the lake file:
- the lake is ATTACHed read-only under a random alias; depot datasets are copied into a schema
  with a random name (DuckDB cannot read their files once external access is off);
- then `enable_external_access=false` and `lock_configuration=true`: no file, URL, ATTACH,
  INSTALL or SET from here on, for any connection of this database;
- user queries only ever reach data through per-grant views (`view_for`), which project the
  masked columns and apply the row filters. The guard has already refused any name that is
  not such a view, and the random aliases keep the raw tables unnamable even past it.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from reconciler.core.access import Grant
from reconciler.store import lakegate


def ident(name: str) -> str:
    return '"' + str(name).replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + str(text).replace("'", "''") + "'"


@dataclass
class Table:
    address: str
    source: str  # the hidden, fully qualified relation
    columns: list[tuple[str, str]]  # (name, DuckDB type) as the data really is


@dataclass
class Snapshot:
    """What the state said when the database was built."""

    datasets: dict[str, dict]  # address -> catalog row (+ "owner_team", "columns": {name: tags})
    policies: list[tuple[str, dict]]
    depots: dict[str, dict]  # depot name -> its document
    depot_commits: dict[str, str | None] = field(default_factory=dict)


def _mask_sql(column: str, how: str, salt: str, col_type: str) -> str:
    c = ident(column)
    if how == "null":
        return f"CAST(NULL AS {col_type}) AS {c}"
    if how == "redact":
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE '[redacted]' END AS {c}"
    if how == "hash":  # salted so a dictionary of known values cannot be hashed to match
        return f"CASE WHEN {c} IS NULL THEN NULL ELSE sha256({literal(salt)} || CAST({c} AS VARCHAR)) END AS {c}"
    if how == "last4":
        s = f"CAST({c} AS VARCHAR)"
        return (f"CASE WHEN {c} IS NULL THEN NULL ELSE repeat('*', greatest(length({s}) - 4, 0)) || "
                f"right({s}, 4) END AS {c}")
    raise ValueError(f"unknown mask {how}")


class LakeDatabase:
    """One locked database over one state snapshot. Thread-safe: each query takes its own cursor."""

    def __init__(self, state_dir: Path, snapshot: Snapshot, salt: str, environ: dict,
                 depots: frozenset[str] = frozenset()):
        self.state_dir = Path(state_dir)
        self.lake_path = self.state_dir / "lake.duckdb"
        self.snapshot = snapshot
        self.depots = depots  # the depot datasets to copy in; the others are not loaded
        self.salt = salt
        self.tables: dict[str, Table] = {}
        self.unreadable: dict[str, str] = {}  # address -> why it could not be loaded
        self._views: dict[tuple, str] = {}
        self._lock = threading.Lock()
        self.con: duckdb.DuckDBPyConnection | None = None
        self.reader = lakegate.Reader(self.lake_path, self.close)
        with self.reader.use():
            self._build(environ)

    # -- building ------------------------------------------------------------------------
    def _build(self, environ: dict) -> None:
        con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False,
                                                 "autoload_known_extensions": False})
        try:
            lake_alias = None
            if self.lake_path.exists() and any(d["kind"] == "lake" for d in self.snapshot.datasets.values()):
                lake_alias = "lake_" + secrets.token_hex(8)
                try:
                    con.execute(f"ATTACH {literal(str(self.lake_path))} AS {ident(lake_alias)} (READ_ONLY)")
                except duckdb.Error as exc:
                    raise lakegate.LakeBusyError(f"cannot open the lake {self.lake_path}: "
                                                 f"{str(exc).splitlines()[0]}") from None
            depot_schema = "depots_" + secrets.token_hex(8)
            con.execute(f"CREATE SCHEMA {ident(depot_schema)}")
            lake_columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
            if lake_alias is not None:  # every lake table's columns in one query (thousands of DESCRIBEs were slow)
                for schema, table, column, type_ in con.execute(
                        "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
                        "WHERE table_catalog = ? ORDER BY table_schema, table_name, ordinal_position",
                        [lake_alias]).fetchall():
                    lake_columns.setdefault((schema, table), []).append((column, type_))
            for n, (address, d) in enumerate(sorted(self.snapshot.datasets.items())):
                if d["kind"] == "lake":
                    if lake_alias is None:
                        self.unreadable[address] = "no workflow has written the lake yet"
                        continue
                    ws, _, table = address[len("lake://"):].partition("/")
                    if (ws, table) not in lake_columns:
                        self.unreadable[address] = f"table {ws}.{table} is not in the lake (not written yet?)"
                        continue
                    self.tables[address] = Table(address, f"{ident(lake_alias)}.{ident(ws)}.{ident(table)}",
                                                 lake_columns[(ws, table)])
                    continue
                else:
                    if address not in self.depots:
                        continue  # not loaded (neither in tables nor unreadable): the engine asks for it
                    source = f"{ident(depot_schema)}.{ident(f't{n}')}"
                    why = self._copy_depot(con, address, source, environ)
                    if why:
                        self.unreadable[address] = why
                        continue
                try:
                    cols = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
                except duckdb.Error as exc:
                    self.unreadable[address] = str(exc).splitlines()[0]
                    continue
                self.tables[address] = Table(address, source, [(c[0], c[1]) for c in cols])
            # from here on nothing in this database can touch a file, a URL or its own settings
            con.execute("SET enable_external_access = false")
            con.execute("SET allow_community_extensions = false")
            con.execute("SET lock_configuration = true")
        except BaseException:
            con.close()
            raise
        self.con = con

    def _copy_depot(self, con, address: str, target: str, environ: dict) -> str | None:
        """Copy a depot dataset into the database (it cannot be read from its files after the lockdown)."""
        from reconciler.stacks.base import JobContext
        from reconciler.stacks.datasets import DatasetError, register_input, release_inputs

        depot = address[len("depot://"):].split("/", 1)[0]
        commit = self.snapshot.depot_commits.get(depot)
        repo_dir = self.state_dir / "checkouts" / (commit or "worktree")
        ctx = JobContext(workflow="query", workflow_id="query", workspace="public", job="load", stack="sql",
                         spec={}, run_id="query", attempt=1, commit=commit, state_dir=self.state_dir,
                         repo_dir=repo_dir, job_dir=self.state_dir, run_dir=self.state_dir, lake=None,
                         depots=self.snapshot.depots, environ=environ, log=lambda line: None)
        cur = con.cursor()
        try:
            register_input(cur, ctx, "__load", address)
            cur.execute(f"CREATE TABLE {target} AS SELECT * FROM \"__load\"")
            return None
        except DatasetError as exc:
            return exc.message
        except duckdb.Error as exc:
            return str(exc).splitlines()[0]
        finally:
            release_inputs(cur)
            cur.close()

    # -- views -----------------------------------------------------------------------------
    def view_for(self, grant: Grant) -> str:
        """The name of a view showing `grant.dataset` as the grant allows (created once per grant)."""
        table = self.tables[grant.dataset]
        key = (grant.dataset, tuple(sorted(grant.masks.items())), grant.filters)
        with self._lock:
            name = self._views.get(key)
            if name:
                return name
            name = "v_" + hashlib.sha256(repr((key, self.salt)).encode()).hexdigest()[:20]
            lowered = {k.lower(): v for k, v in grant.masks.items()}
            cols = [_mask_sql(c, lowered[c.lower()], self.salt, t) if c.lower() in lowered else ident(c)
                    for c, t in table.columns]
            where = " AND ".join(f"({f})" for f in grant.filters)
            sql = f"CREATE VIEW {ident(name)} AS SELECT {', '.join(cols)} FROM {table.source}" + \
                  (f" WHERE {where}" if where else "")
            cur = self.con.cursor()
            try:
                cur.execute(sql)
            finally:
                cur.close()
            self._views[key] = name
            return name

    def close(self) -> None:
        con, self.con = self.con, None
        if con is not None:
            con.close()
