"""Dataset addresses as DuckDB relations: what the sql, quality and profile stacks read and write.

`register_input` makes a dataset queryable under a name on one cursor of the run's lake
connection. Files and lake tables become TEMP VIEWs (DuckDB streams them); DuckDB depot
files are ATTACHed read-only; SQLite and PostgreSQL tables are read with stdlib sqlite3 and
psycopg into pyarrow tables registered on the cursor, because DuckDB's sqlite/postgres
extensions would need a network INSTALL. `release_inputs(cur)` undoes what it did (ATTACHes
are database-wide, so they must be detached even when the cursor is closed).

`write_output` writes a query's result into the job's workspace schema of the lake, one
output per transaction so a failure leaves the old table as it was.

pyarrow and psycopg are imported only by the readers that use them: a run of file and lake
datasets does not pay for loading them.
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import duckdb

from reconciler.core.ids import DEFAULT_WORKSPACE, make_id
from reconciler.providers.depot import READERS, DepotError, _file_candidates, open_sqlite_read_only
from reconciler.providers.secret import resolve_secret
from reconciler.stacks.base import JobContext, TableWritten

_ADDRESS = re.compile(r"^(depot|lake)://([^/\s]+)/(\S+)$")
MODES = ("overwrite", "append", "merge")
# counting a CSV/JSON input means reading it whole; past this size rows_in is left unknown
_COUNT_TEXT_BYTES = 64 * 1024 * 1024


class DatasetError(Exception):
    """A user-facing reason a dataset cannot be read or written. `retryable`: could a later attempt work
    (an unreachable server) or not (a missing file, a bad address, a schema mismatch)."""

    def __init__(self, message: str, retryable: bool = False):
        super().__init__(message)
        self.message = message
        self.retryable = retryable


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_address(address: str) -> tuple[str, str, str]:
    """'lake://ws/t' -> ('lake', 'ws', 't'); 'depot://d/x' -> ('depot', 'd', 'x')."""
    match = _ADDRESS.match(address or "")
    if not match:
        raise DatasetError(f"'{address}' is not a dataset address; write lake://WORKSPACE/TABLE or depot://DEPOT/DATASET")
    return match.group(1), match.group(2), match.group(3)


def lake_table(address: str) -> str:
    scheme, workspace, table = parse_address(address)
    if scheme != "lake":
        raise DatasetError(f"{address} is not a lake table (lake://WORKSPACE/TABLE)")
    return f"{ident(workspace)}.{ident(table)}"


# ---- cleanup of what register_input did, per cursor -----------------------------------------

_LOCK = threading.Lock()
_CLEANUP: dict[int, list[str]] = {}  # id(cursor) -> statements to run on release, in order


def _on_release(cur, statement: str) -> None:
    with _LOCK:
        _CLEANUP.setdefault(id(cur), []).insert(0, statement)


def release_inputs(cur, closing: bool = False) -> None:
    """Drop the views, registrations and ATTACHes that register_input made on `cur`. Never raises.
    `closing`: the caller closes `cur` next, which drops its TEMP views and registrations with it (a
    cursor is a connection of its own); only the ATTACHes, visible to every cursor, are undone."""
    with _LOCK:
        statements = _CLEANUP.pop(id(cur), [])
    for statement in statements:
        if closing and not statement.startswith("DETACH "):
            continue
        try:
            if statement.startswith("UNREGISTER "):
                cur.unregister(statement[len("UNREGISTER "):])
            else:
                cur.execute(statement)
        except duckdb.Error:
            pass


# ---- reading -----------------------------------------------------------------------------------


def register_input(cur, ctx: JobContext, name: str, address: str) -> int | None:
    """Make `address` queryable as `name` on `cur`; its row count when that is cheap to know, else None.
    Raises DatasetError."""
    scheme, owner, dataset = parse_address(address)
    if scheme == "lake":
        return _register_lake(cur, ctx, name, address, owner, dataset)
    document = (ctx.depots or {}).get(owner)
    if document is None:
        known = ", ".join(sorted(ctx.depots or {})) or "none"
        raise DatasetError(f"cannot read {address}: there is no depot '{owner}' (depots: {known})")
    spec = document.get("depot") or {}
    wanted = spec.get("datasets")
    if wanted and dataset not in wanted:
        raise DatasetError(f"cannot read {address}: depot '{owner}' lists datasets {', '.join(wanted)}; "
                           f"add {dataset} to its `datasets` or fix the address")
    kind = spec.get("kind")
    reader = _DEPOT_READERS.get(kind)
    if reader is None:
        raise DatasetError(f"cannot read {address}: depot '{owner}' has unknown kind {kind!r}")
    return reader(cur, ctx, name, address, spec, dataset)


def _register_lake(cur, ctx: JobContext, name: str, address: str, workspace: str, table: str) -> int:
    target = f"{ident(workspace)}.{ident(table)}"
    try:
        cur.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM {target}")
    except duckdb.CatalogException:
        raise DatasetError(f"dataset {address} does not exist (no workflow has written it yet?)") from None
    _on_release(cur, f"DROP VIEW IF EXISTS temp.main.{ident(name)}")
    known = run_memo(ctx, "row_counts").get(address)  # an upstream job of this run wrote it: its count is known
    return known if known is not None else cur.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]


def run_memo(ctx: JobContext, name: str) -> dict:
    """One of what the run's lake remembers for its jobs (engine/runner.py RunLake): `row_counts` (lake tables
    this run wrote, depot files a job counted, keyed by their sizes and times) or `columns` (lake tables this
    run wrote, depot datasets a job described; for lineage only: a depot file another job rewrites during the
    run keeps the columns first seen there). A throwaway dict outside a run."""
    memo = getattr(ctx.lake, name, None)
    return memo if isinstance(memo, dict) else {}


def _resolve_path(ctx: JobContext, raw: str) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(ctx.repo_dir) / path


def _read_file(cur, ctx: JobContext, name: str, address: str, spec: dict, dataset: str) -> int | None:
    raw = spec.get("path") or "."
    root = _resolve_path(ctx, raw)
    if not root.exists():
        raise DatasetError(f"cannot read {address}: folder {raw} does not exist (looked in {root})")
    try:
        candidates = _file_candidates(root, raw, spec.get("format"))
    except (DepotError, OSError) as exc:
        raise DatasetError(f"cannot read {address}: {exc}") from None
    match = next(((fmt, files) for found, fmt, files in candidates if found == dataset), None)
    if match is None:
        names = ", ".join(found for found, _, _ in candidates) or "none"
        raise DatasetError(f"cannot read {address}: no file or folder named {dataset} in {raw} "
                           f"(datasets there: {names})")
    fmt, files = match
    source = f"{READERS[fmt]}([{', '.join(literal(str(p)) for p in files)}])"
    try:
        cur.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM {source}")
    except duckdb.Error as exc:
        raise DatasetError(f"cannot read {address} as {fmt} ({files[0]}): {first_line(exc)}") from None
    _on_release(cur, f"DROP VIEW IF EXISTS temp.main.{ident(name)}")
    stats = [p.stat() for p in files]
    # another job of this run counted these very files (same sizes and times): their count is known
    key = f"{address}\0" + ",".join(f"{s.st_size}:{s.st_mtime_ns}" for s in stats)
    known = run_memo(ctx, "row_counts")
    if key in known:
        return known[key]
    if fmt != "parquet" and sum(s.st_size for s in stats) > _COUNT_TEXT_BYTES:
        return None
    try:
        known[key] = cur.execute(f"SELECT count(*) FROM {ident(name)}").fetchall()[0][0]
    except duckdb.InterruptException:
        raise
    except duckdb.Error as exc:
        raise DatasetError(f"cannot read {address} as {fmt} ({files[0]}): {first_line(exc)}") from None
    return known[key]


def _read_duckdb(cur, ctx: JobContext, name: str, address: str, spec: dict, dataset: str) -> int | None:
    raw = spec.get("path") or ""
    path = _resolve_path(ctx, raw)
    if not path.is_file():
        raise DatasetError(f"cannot read {address}: file {raw} does not exist (looked in {path})")
    # ATTACH is visible to every cursor of the lake: a unique alias keeps concurrent jobs apart
    alias = "depot_" + uuid.uuid4().hex[:12]
    try:
        cur.execute(f"ATTACH {literal(str(path))} AS {ident(alias)} (READ_ONLY)")
    except duckdb.Error as exc:
        raise DatasetError(f"cannot read {address}: cannot open DuckDB database {path}: {first_line(exc)}",
                           retryable=True) from None
    _on_release(cur, f"DETACH DATABASE IF EXISTS {ident(alias)}")
    schema, _, table = dataset.rpartition(".")
    rows = cur.execute("SELECT table_schema, table_name, table_type FROM information_schema.tables "
                       "WHERE table_catalog = ? ORDER BY 1, 2", [alias]).fetchall()
    found = {(s, t): kind for s, t, kind in rows}
    key = next((k for k in found if k[1].lower() == table.lower() and k[0].lower() == (schema or "main").lower()),
               None)
    if key is None:
        names = ", ".join(t if s == "main" else f"{s}.{t}" for s, t in found) or "none"
        raise DatasetError(f"cannot read {address}: DuckDB database {raw} has no table {dataset} (tables: {names})")
    target = f"{ident(alias)}.{ident(key[0])}.{ident(key[1])}"
    cur.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS SELECT * FROM {target}")
    _on_release(cur, f"DROP VIEW IF EXISTS temp.main.{ident(name)}")
    if found[key] != "BASE TABLE":
        return None
    return cur.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]


def _register_arrow(cur, name: str, table) -> int:
    cur.register(name, table)
    _on_release(cur, f"UNREGISTER {name}")
    return table.num_rows


def _column(values: list, type_):
    """An arrow column from Python values: the declared type, else inferred, else text."""
    import pyarrow as pa

    for attempt in ([type_] if type_ is not None else []) + [None]:
        try:
            return pa.array(values, type=attempt)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            continue
    return pa.array([None if v is None else _text(v) for v in values], type=pa.string())


def _text(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)


def _sqlite_type(declared: str):
    # SQLite's affinity rules (https://sqlite.org/datatype3.html section 3.1); other affinities: infer
    import pyarrow as pa

    upper = (declared or "").upper()
    if "INT" in upper:
        return pa.int64()
    if any(word in upper for word in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if any(word in upper for word in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    return None


def _read_sqlite(cur, ctx: JobContext, name: str, address: str, spec: dict, dataset: str) -> int:
    raw = spec.get("path") or ""
    path = _resolve_path(ctx, raw)
    if not path.is_file():
        raise DatasetError(f"cannot read {address}: file {raw} does not exist (looked in {path})")
    try:
        conn = open_sqlite_read_only(path)
    except sqlite3.Error as exc:
        raise DatasetError(f"cannot read {address}: cannot open SQLite database {path}: {exc}", retryable=True) from None
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
                                             "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        table = next((t for t in tables if t.lower() == dataset.lower()), None)
        if table is None:
            raise DatasetError(f"cannot read {address}: SQLite database {raw} has no table {dataset} "
                               f"(tables: {', '.join(tables) or 'none'})")
        declared = [(col[1], col[2]) for col in conn.execute(f"PRAGMA table_info({ident(table)})")]
        rows = conn.execute(f"SELECT * FROM {ident(table)}").fetchall()
    except sqlite3.Error as exc:
        raise DatasetError(f"cannot read {address}: SQLite database {path}: {exc}", retryable=True) from None
    finally:
        conn.close()
    import pyarrow as pa

    columns = list(zip(*rows)) if rows else [()] * len(declared)
    arrow = pa.table({col: _column(list(values), _sqlite_type(type_) or (pa.string() if not rows else None))
                      for (col, type_), values in zip(declared, columns)})
    return _register_arrow(cur, name, arrow)


def _pg_types() -> dict:
    """PostgreSQL type OIDs -> arrow types; the rest is inferred from the values."""
    import pyarrow as pa

    return {
        16: pa.bool_(), 20: pa.int64(), 21: pa.int16(), 23: pa.int32(), 26: pa.int64(), 700: pa.float32(),
        701: pa.float64(), 25: pa.string(), 1043: pa.string(), 1042: pa.string(), 19: pa.string(), 18: pa.string(),
        1082: pa.date32(), 1114: pa.timestamp("us"), 1184: pa.timestamp("us", tz="UTC"), 1083: pa.time64("us"),
        17: pa.binary(),
    }


_PG_AS_TEXT = {2950, 114, 3802, 1186, 869, 650, 829}  # uuid, json, jsonb, interval, inet, cidr, macaddr


def _pg_password(ctx: JobContext, ref: Any) -> str | None:
    """The depot's password from its `{secret: NAME}`: a value the runner resolved into
    ctx.runtime_secrets, or the secret's definition (ctx.secrets, if the runner gives it) read from
    ctx.environ by the secret provider's own function."""
    if ref is None:
        return None
    if not isinstance(ref, dict) or not ref.get("secret"):
        raise DatasetError("password must be a reference {secret: NAME}; never put a password in git")
    workspace = ref.get("workspace") or DEFAULT_WORKSPACE
    for key in (f"{workspace}/{ref['secret']}", make_id("secret", ref["secret"], workspace), ref["secret"]):
        if key in (ctx.runtime_secrets or {}):
            return ctx.runtime_secrets[key]
    secrets = getattr(ctx, "secrets", None) or {}  # secret id -> normalised document
    adapter = SimpleNamespace(resources={rid: SimpleNamespace(spec=doc) for rid, doc in secrets.items()},
                              records={}, environ=ctx.environ or {})
    value, err = resolve_secret(adapter, ref, DEFAULT_WORKSPACE)  # type: ignore[arg-type]
    if err:
        raise DatasetError(f"password: {err}")
    return value


def _read_postgres(cur, ctx: JobContext, name: str, address: str, spec: dict, dataset: str) -> int:
    import psycopg
    import pyarrow as pa

    host = spec.get("host") or "localhost"
    port = int(spec.get("port") or 5432)
    database = spec.get("database") or "postgres"
    user = spec.get("user") or "postgres"
    schema, _, table = dataset.rpartition(".")
    schema = schema or spec.get("schema") or "public"
    try:
        password = _pg_password(ctx, spec.get("password"))
    except DatasetError as exc:
        raise DatasetError(f"cannot read {address}: {exc}") from None
    where = f"postgres at {host}:{port} (database {database}, user {user})"
    remaining = ctx.remaining()
    options = f"-c statement_timeout={max(1, int(remaining * 1000))}" if remaining is not None else ""
    try:
        conn = psycopg.connect(host=host, port=port, dbname=database, user=user, password=password,
                               connect_timeout=max(1, min(10, int(remaining or 10))),
                               application_name="reconciler", options=options)
    except psycopg.Error as exc:
        raise DatasetError(f"cannot read {address}: cannot connect to {where}: {_redact(first_line(exc), password)}",
                           retryable=True) from None
    try:
        with conn:
            exists = conn.execute("SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
                                  "AND table_name = %s", [schema, table]).fetchone()
            if not exists:
                raise DatasetError(f"cannot read {address}: {where} has no table {schema}.{table}")
            with conn.cursor() as pg:
                pg.execute(f"SELECT * FROM {ident(schema)}.{ident(table)}")
                description = pg.description or []
                rows = pg.fetchall()
    except psycopg.errors.QueryCanceled:
        raise DatasetError(f"cannot read {address}: timed out reading {schema}.{table} from {where}",
                           retryable=True) from None
    except psycopg.Error as exc:
        raise DatasetError(f"cannot read {address}: {where}: {_redact(first_line(exc), password)}",
                           retryable=True) from None
    finally:
        conn.close()
    columns = list(zip(*rows)) if rows else [()] * len(description)
    pg_types = _pg_types()
    arrays = {}
    for col, values in zip(description, columns):
        values = list(values)
        if col.type_code in _PG_AS_TEXT:
            arrays[col.name] = pa.array([None if v is None else _text(v) for v in values], type=pa.string())
            continue
        type_ = pg_types.get(col.type_code)
        if col.type_code == 1700 and col.precision and col.precision <= 38:
            type_ = pa.decimal128(col.precision, col.scale or 0)
        arrays[col.name] = _column(values, type_ or (pa.string() if not values else None))
    return _register_arrow(cur, name, pa.table(arrays))


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


_DEPOT_READERS = {"file": _read_file, "duckdb": _read_duckdb, "sqlite": _read_sqlite, "postgres": _read_postgres}


# ---- describing and writing the lake -----------------------------------------------------------


def describe_relation(cur, relation: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of a relation given as SQL (a quoted name, or "schema"."table")."""
    return [(row[0], row[1]) for row in cur.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()]


def view_columns(cur, name: str) -> list[tuple[str, str]]:
    """(column, DuckDB type) of the view (or table) `name` on `cur`: DuckDB's relation API binds it without
    the parse, plan and result of a DESCRIBE statement (~0.3 ms less per call). The types read as DESCRIBE
    writes them."""
    relation = cur.view(ident(name))
    return [(column, str(kind)) for column, kind in zip(relation.columns, relation.types)]


def describe(cur, address: str) -> list[tuple[str, str]]:
    """Columns of a lake table. Raises DatasetError when it does not exist."""
    try:
        return describe_relation(cur, lake_table(address))
    except duckdb.CatalogException:
        raise DatasetError(f"dataset {address} does not exist (no workflow has written it yet?)") from None


def row_count(cur, address: str) -> int:
    try:
        return cur.execute(f"SELECT count(*) FROM {lake_table(address)}").fetchall()[0][0]
    except duckdb.CatalogException:
        raise DatasetError(f"dataset {address} does not exist (no workflow has written it yet?)") from None


def _table_exists(cur, schema: str, table: str) -> bool:
    return cur.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
                       "AND lower(schema_name) = lower(?) AND lower(table_name) = lower(?)",
                       [schema, table]).fetchall()[0][0] > 0


def _ensure_schema(cur, schema: str) -> None:
    # concurrent jobs creating one schema: DuckDB reports a write-write conflict to the second one while
    # the first has not committed yet, so try again until the first one's schema is there
    for attempt in range(50):
        try:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}")
            return
        except duckdb.TransactionException:
            if attempt == 49:
                raise
            time.sleep(0.02)


def write_output(cur, ctx: JobContext, address: str, select_sql: str, mode: str,
                 keys: list[str] | None, *, columns: list[tuple[str, str]] | None = None,
                 alongside: Callable[[], Any] | None = None) -> TableWritten:
    """Write the rows of `select_sql` into the lake table `address`, atomically.

    TableWritten.row_count is the table's row count afterwards; `written_rows(result)` is how many
    rows this write inserted or replaced (for overwrite, both are the same). Raises DatasetError
    for a user error; duckdb.InterruptException passes through (the old table is kept).

    `columns`: the select's (name, type), when the caller knows them: an overwrite's table then has
    exactly these and is not described again. `alongside`: called just before the write's statement
    runs, to start work on another thread while DuckDB writes (it releases the GIL then; started any
    earlier, pure-Python work delays each short statement before it by up to the GIL's 5 ms switch
    interval)."""
    scheme, workspace, table = parse_address(address)
    if scheme != "lake":
        raise DatasetError(f"cannot write {address}: outputs go to lake://{ctx.workspace}/TABLE")
    if workspace != ctx.workspace:
        raise DatasetError(f"cannot write {address}: a workflow may only write into its own workspace "
                           f"({ctx.workspace}); write lake://{ctx.workspace}/{table}")
    if mode not in MODES:
        raise DatasetError(f"cannot write {address}: unknown mode {mode!r}; use one of {', '.join(MODES)}")
    keys = list(keys or [])
    if mode == "merge" and not keys:
        raise DatasetError(f"merge output needs keys: the output to {address} uses mode: merge; "
                           "list the columns that identify a row, e.g. keys: [id]")
    target = f"{ident(workspace)}.{ident(table)}"
    ensured = getattr(ctx.lake, "schemas", None)  # the run's lake remembers the schemas it made sure of
    if ensured is None or workspace not in ensured:
        _ensure_schema(cur, workspace)
        if ensured is not None:
            ensured.add(workspace)
    start = alongside or (lambda: None)
    if mode == "overwrite" and columns:
        # one statement, atomic on its own (DuckDB commits it or keeps the old table): no BEGIN/COMMIT
        # round trips, and the select's columns are the table's
        start()
        try:
            written = _count(cur.execute(f"CREATE OR REPLACE TABLE {target} AS {select_sql}"))
        except duckdb.Error as exc:
            raise _write_error(exc, address, mode) from None
        return _written(ctx, address, columns, written, written, mode)
    cur.begin()
    try:
        if mode == "overwrite":
            start()
            written = _count(cur.execute(f"CREATE OR REPLACE TABLE {target} AS {select_sql}"))
        elif not _table_exists(cur, workspace, table):
            if mode == "merge":
                _check_keys(columns or describe_relation(cur, f"({select_sql})"), keys, address)
            start()
            written = _count(cur.execute(f"CREATE TABLE {target} AS {select_sql}"))
        elif mode == "append":
            start()
            written = _count(cur.execute(f"INSERT INTO {target} BY NAME {select_sql}"))
        else:
            start()
            written = _merge(cur, address, target, select_sql, keys)
        # an overwrite's table has exactly the select's columns; append and merge keep the existing table's
        columns = columns if mode == "overwrite" and columns else describe_relation(cur, target)
        # an overwrite's table holds exactly what was written; only append and merge need a count
        total = written if mode == "overwrite" else cur.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        cur.commit()
    except BaseException as exc:
        try:
            cur.rollback()
        except duckdb.Error:
            pass  # an interrupted rollback: closing the cursor discards the transaction
        if isinstance(exc, duckdb.Error):
            raise _write_error(exc, address, mode) from None
        raise
    return _written(ctx, address, columns, total, written, mode)


def _write_error(exc: duckdb.Error, address: str, mode: str) -> Exception:
    """What a failed write raises: an interrupt as it is (the job's timeout or cancel), else a DatasetError.
    A write-write conflict with a concurrent job may pass on a later attempt; bad data will not."""
    if isinstance(exc, duckdb.InterruptException):
        return exc
    return DatasetError(f"cannot write {address} ({mode}): {exc}", retryable=isinstance(exc, duckdb.TransactionException))


def _written(ctx: JobContext, address: str, columns, total: int, written: int, mode: str) -> TableWritten:
    run_memo(ctx, "row_counts")[address] = total  # what a downstream job of the run reads needs no count(*)
    run_memo(ctx, "columns")[address] = list(columns)  # nor a DESCRIBE for its lineage
    result = TableWritten(address=address, columns=columns, row_count=total, mode=mode)
    result.rows_written = written  # type: ignore[attr-defined]  # not a field: the contract stays as it is
    return result


def written_rows(result: TableWritten) -> int:
    """How many rows the write of `result` inserted or replaced (append/merge: not the table's total)."""
    return getattr(result, "rows_written", result.row_count)


def _count(relation) -> int:
    rows = relation.fetchall()  # DuckDB 2 wants every result read before the cursor's next call
    return int(rows[0][0]) if rows and isinstance(rows[0][0], int) else 0


def _check_keys(columns: list[tuple[str, str]], keys: list[str], address: str) -> None:
    names = {c.lower() for c, _ in columns}
    missing = [k for k in keys if k.lower() not in names]
    if missing:
        raise DatasetError(f"cannot merge into {address}: keys {', '.join(missing)} are not columns of the output "
                           f"(columns: {', '.join(c for c, _ in columns)})")


def _merge(cur, address: str, target: str, select_sql: str, keys: list[str]) -> int:
    stage = ident("_merge_" + uuid.uuid4().hex[:12])
    # staged once so the query runs once (random(), now() and re-reads stay consistent)
    written = _count(cur.execute(f"CREATE TEMP TABLE {stage} AS {select_sql}"))
    _check_keys(describe_relation(cur, stage), keys, address)
    existing = describe_relation(cur, target)
    missing = [k for k in keys if k.lower() not in {c.lower() for c, _ in existing}]
    if missing:
        raise DatasetError(f"cannot merge into {address}: the existing table has no column {', '.join(missing)} "
                           f"(columns: {', '.join(c for c, _ in existing)}); overwrite it once or fix keys")
    key_list = ", ".join(ident(k) for k in keys)
    duplicated = cur.execute(f"SELECT count(*) FROM (SELECT {key_list} FROM {stage} GROUP BY ALL "
                             "HAVING count(*) > 1)").fetchall()[0][0]
    if duplicated:
        raise DatasetError(f"cannot merge into {address}: {duplicated} key value(s) of ({', '.join(keys)}) appear "
                           "more than once in the output; make the keys unique (e.g. with QUALIFY row_number())")
    match = " AND ".join(f"{target}.{ident(k)} IS NOT DISTINCT FROM s.{ident(k)}" for k in keys)
    cur.execute(f"DELETE FROM {target} USING {stage} AS s WHERE {match}")
    cur.execute(f"INSERT INTO {target} BY NAME SELECT * FROM {stage}")
    cur.execute(f"DROP TABLE {stage}")
    return written


# ---- JSON-safe values for check samples and profiles ---------------------------------------------


def json_safe(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if value == value and value not in (float("inf"), float("-inf")) else str(value)
    if isinstance(value, decimal.Decimal):
        return float(value) if value.is_finite() else str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    return str(value)
