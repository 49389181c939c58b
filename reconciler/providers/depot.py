"""depot: a registered data source. Applying one checks that it is reachable and
introspects its datasets and their columns into the catalog; no data is copied.

Each kind's reader returns the same thing, a list of `Found` datasets, or a
message saying what is wrong and where it looked; the provider then applies the
depot's `datasets` filter and `column_tags` and replaces what the depot owns in
the catalog.
"""
from __future__ import annotations

import sqlite3
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from reconciler.core.ids import DEFAULT_WORKSPACE
from reconciler.core.record import Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome
from reconciler.providers.secret import resolve_secret

# extension -> format; compound extensions first so "a.csv.gz" is not read as ".gz"
EXTENSIONS = {
    ".csv.gz": "csv", ".tsv.gz": "csv", ".csv": "csv", ".tsv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
    ".json.gz": "json", ".jsonl.gz": "json", ".ndjson.gz": "json", ".json": "json", ".jsonl": "json", ".ndjson": "json",
}
READERS = {"csv": "read_csv_auto", "parquet": "read_parquet", "json": "read_json_auto"}


@dataclass
class Found:
    name: str
    format: str
    location: str
    row_count: int | None
    columns: list[tuple[str, str]] = field(default_factory=list)  # (name, type) in order


class DepotError(Exception):
    """A user-facing reason the depot cannot be read (becomes an Outcome failure)."""


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def resolve_path(ctx: ApplyContext, raw: str) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else ctx.repo_dir() / path


def _split_ext(filename: str) -> tuple[str, str] | None:
    lower = filename.lower()
    for ext, fmt in EXTENSIONS.items():
        if lower.endswith(ext) and len(filename) > len(ext):
            return filename[: -len(ext)], fmt
    return None


def _visible(path: Path) -> bool:
    # Spark/Hadoop markers (_SUCCESS) and dotfiles are not data
    return not path.name.startswith((".", "_"))


# ---- kind: file --------------------------------------------------------------------------


def _file_candidates(root: Path, raw: str, wanted_format: str | None) -> list[tuple[str, str, list[Path]]]:
    """(dataset name, format, files) for the files and one-format subfolders of `root`."""
    entries = [root] if root.is_file() else sorted(p for p in root.iterdir() if _visible(p))
    found: dict[str, tuple[str, list[Path]]] = {}

    def add(name: str, fmt: str, files: list[Path], shown: str) -> None:
        if wanted_format and fmt != wanted_format:
            return
        if name in found:
            raise DepotError(f"two datasets are named '{name}' in {raw} ({found[name][1][0].name} and {shown}); "
                             "rename one or move it into a folder of its own")
        found[name] = (fmt, files)

    for entry in entries:
        if entry.is_file():
            split = _split_ext(entry.name)
            if split:
                add(split[0], split[1], [entry], entry.name)
        elif entry.is_dir():
            files = sorted(p for p in entry.rglob("*") if p.is_file() and _visible(p) and _split_ext(p.name)
                           and (not wanted_format or _split_ext(p.name)[1] == wanted_format))
            formats = {_split_ext(p.name)[1] for p in files}
            if len(formats) > 1:
                raise DepotError(f"folder {raw}/{entry.name} mixes {' and '.join(sorted(formats))} files; "
                                 "keep one format per dataset folder")
            if files:
                add(entry.name, formats.pop(), files, entry.name + "/")
    return [(name, fmt, files) for name, (fmt, files) in found.items()]


_SCRATCH = None  # an in-memory DuckDB for reading files: opening and closing one cost ~21 ms a depot
_SCRATCH_LOCK = threading.Lock()


def _scratch_cursor():
    """A cursor (a connection of its own, for this thread) on the process's in-memory DuckDB."""
    global _SCRATCH
    with _SCRATCH_LOCK:
        if _SCRATCH is None:
            _SCRATCH = duckdb.connect()
        return _SCRATCH.cursor()


def read_file_depot(ctx: ApplyContext, depot: str, spec: dict) -> list[Found]:
    raw = spec.get("path") or "."
    root = resolve_path(ctx, raw)
    if not root.exists():
        raise DepotError(f"folder {raw} does not exist (looked in {root})")
    wanted = spec.get("format")
    listed = set(spec.get("datasets") or ())  # only these are read (introspect keeps only these)
    found = []
    conn = _scratch_cursor()
    try:
        for name, fmt, files in _file_candidates(root, raw, wanted):
            if listed and name not in listed:  # named, for introspect's message when a listed one is missing
                found.append(Found(name, fmt, str(files[0]), None))
                continue
            paths = "[" + ", ".join(_literal(str(p)) for p in files) + "]"
            source = f"{READERS[fmt]}({paths})"
            shown = f"{raw}/{files[0].relative_to(root)}" if root.is_dir() else raw
            try:
                described = conn.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
                rows = conn.execute(f"SELECT count(*) FROM {source}").fetchone()[0]
            except duckdb.Error as exc:
                raise DepotError(f"cannot read {shown} as {fmt}: {_first_line(exc)}") from None
            # a top-level file is its own location; a dataset folder is the folder
            location = str(files[0]) if root.is_file() or files[0].parent == root else str(root / name)
            found.append(Found(name, fmt, location, rows, [(r[0], r[1]) for r in described]))
    finally:
        conn.close()
    return found


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# ---- kind: duckdb ------------------------------------------------------------------------


def read_duckdb_depot(ctx: ApplyContext, depot: str, spec: dict) -> list[Found]:
    raw = spec.get("path") or ""
    path = resolve_path(ctx, raw)
    if not path.is_file():
        raise DepotError(f"file {raw} does not exist (looked in {path})")
    try:
        try:
            conn = duckdb.connect(str(path), read_only=True)
        except duckdb.ConnectionException:
            # already open writable in this process (DuckDB refuses a second configuration): share it
            conn = duckdb.connect(str(path))
    except duckdb.Error as exc:
        raise DepotError(f"cannot open DuckDB database {path}: {_first_line(exc)}") from None
    try:
        tables = conn.execute(
            "SELECT table_schema, table_name, table_type FROM information_schema.tables "
            "WHERE table_catalog = current_database() ORDER BY 1, 2").fetchall()
        columns = conn.execute(
            "SELECT table_schema, table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() ORDER BY table_schema, table_name, ordinal_position").fetchall()
        by_table: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for schema, table, column, type_ in columns:
            by_table.setdefault((schema, table), []).append((column, type_))
        found = []
        for schema, table, kind in tables:
            rows = None
            if kind == "BASE TABLE":
                rows = conn.execute(f"SELECT count(*) FROM {_ident(schema)}.{_ident(table)}").fetchone()[0]
            name = table if schema == "main" else f"{schema}.{table}"
            found.append(Found(name, "table" if kind == "BASE TABLE" else "view", f"{path}#{schema}.{table}",
                               rows, by_table.get((schema, table), [])))
        return found
    except duckdb.Error as exc:
        raise DepotError(f"cannot read DuckDB database {path}: {_first_line(exc)}") from None
    finally:
        conn.close()


# ---- kind: sqlite ------------------------------------------------------------------------


def open_sqlite_read_only(path: Path) -> sqlite3.Connection:
    """stdlib sqlite3, read-only by URI: DuckDB's sqlite extension would need a network INSTALL."""
    return sqlite3.connect("file:" + urllib.parse.quote(str(path)) + "?mode=ro", uri=True, timeout=5)


def read_sqlite_depot(ctx: ApplyContext, depot: str, spec: dict) -> list[Found]:
    raw = spec.get("path") or ""
    path = resolve_path(ctx, raw)
    if not path.is_file():
        raise DepotError(f"file {raw} does not exist (looked in {path})")
    try:
        conn = open_sqlite_read_only(path)
    except sqlite3.Error as exc:
        raise DepotError(f"cannot open SQLite database {path}: {exc}") from None
    try:
        tables = conn.execute("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                              "AND name NOT LIKE 'sqlite_%' ORDER BY name").fetchall()
        found = []
        for table, kind in tables:
            info = conn.execute(f"PRAGMA table_info({_ident(table)})").fetchall()
            rows = conn.execute(f"SELECT count(*) FROM {_ident(table)}").fetchone()[0] if kind == "table" else None
            found.append(Found(table, kind, f"{path}#{table}", rows,
                               [(col[1], col[2] or "ANY") for col in info]))
        return found
    except sqlite3.Error as exc:
        raise DepotError(f"cannot read SQLite database {path}: {exc}") from None
    finally:
        conn.close()


# ---- kind: postgres ----------------------------------------------------------------------


def read_postgres_depot(ctx: ApplyContext, depot: str, spec: dict) -> list[Found]:
    host = spec.get("host") or "localhost"
    try:
        port = int(spec.get("port") or 5432)
    except (TypeError, ValueError):
        raise DepotError(f"port must be a number, not {spec.get('port')!r}") from None
    database = spec.get("database") or "postgres"
    user = spec.get("user") or "postgres"
    schema = spec.get("schema") or "public"
    password = None
    ref = spec.get("password")
    if isinstance(ref, dict):
        password, err = resolve_secret(ctx, ref, DEFAULT_WORKSPACE)
        if err:
            raise DepotError(f"password: {err}")
    elif ref is not None:
        raise DepotError("password must be a reference {secret: NAME}; never put a password in git")
    where = f"postgres at {host}:{port} (database {database}, user {user})"
    import psycopg  # only for postgres depots

    try:
        conn = psycopg.connect(host=host, port=port, dbname=database, user=user, password=password,
                               connect_timeout=5, application_name="reconciler",
                               options="-c statement_timeout=30000")
    except psycopg.Error as exc:
        raise DepotError(f"cannot connect to {where}: {_redact(_first_line(exc), password)}") from None
    try:
        with conn:
            if not conn.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s",
                                [schema]).fetchone():
                raise DepotError(f"schema {schema} does not exist in {where}; create it or fix `schema`")
            rows = conn.execute(
                "SELECT c.table_name, c.column_name, "
                "CASE WHEN c.data_type IN ('USER-DEFINED', 'ARRAY') THEN c.udt_name ELSE c.data_type END, "
                "t.table_type FROM information_schema.columns c JOIN information_schema.tables t "
                "ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
                "WHERE c.table_schema = %s ORDER BY c.table_name, c.ordinal_position", [schema]).fetchall()
            # the planner's estimate: counting every table on each apply could take minutes
            estimates = dict(conn.execute(
                "SELECT c.relname, c.reltuples::bigint FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.reltuples >= 0", [schema]).fetchall())
    except psycopg.Error as exc:
        raise DepotError(f"cannot read schema {schema} of {where}: {_redact(_first_line(exc), password)}") from None
    finally:
        conn.close()
    found: dict[str, Found] = {}
    for table, column, type_, kind in rows:
        f = found.get(table)
        if f is None:
            f = found[table] = Found(table, "table" if kind == "BASE TABLE" else "view",
                                     f"{host}:{port}/{database}/{schema}.{table}", estimates.get(table))
        f.columns.append((column, type_))
    return list(found.values())


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


READERS_BY_KIND = {"file": read_file_depot, "duckdb": read_duckdb_depot, "sqlite": read_sqlite_depot,
                   "postgres": read_postgres_depot}


# ---- the provider ------------------------------------------------------------------------


def introspect(ctx: ApplyContext, depot: str, spec: dict) -> list[Found]:
    """The depot's datasets after its `datasets` filter; raises DepotError."""
    kind = spec.get("kind")
    reader = READERS_BY_KIND.get(kind)
    if reader is None:
        raise DepotError(f"unknown kind {kind!r}; use one of {', '.join(READERS_BY_KIND)}")
    found = reader(ctx, depot, spec)
    wanted = spec.get("datasets")
    if wanted:
        names = {f.name for f in found}
        missing = [n for n in wanted if n not in names]
        if missing:
            raise DepotError(f"datasets {', '.join(missing)} listed in `datasets` were not found "
                             f"(found: {', '.join(sorted(names)) or 'nothing'})")
        found = [f for f in found if f.name in set(wanted)]
    return found


def column_tags(spec: dict, found: list[Found]) -> dict[tuple[str, str], list[str]]:
    """`column_tags` as {(dataset, column): tags}; raises DepotError for a column that does not exist,
    since a misspelt `pii` tag would silently leave the column unmasked."""
    by_name = {f.name: f for f in found}
    tags: dict[tuple[str, str], list[str]] = {}
    for key, values in (spec.get("column_tags") or {}).items():
        dataset, _, column = key.rpartition(".")
        f = by_name.get(dataset)
        if f is None:
            raise DepotError(f"column_tags names {key}, but there is no dataset {dataset or key!r} "
                             f"(datasets: {', '.join(sorted(by_name)) or 'none'})")
        if column not in {c for c, _ in f.columns}:
            raise DepotError(f"column_tags names {key}, but {dataset} has no column {column!r} "
                             f"(columns: {', '.join(c for c, _ in f.columns)})")
        tags[(dataset, column)] = list(values or [])
    return tags


class DepotProvider:
    type = "depot"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        spec = resource.spec.get("depot") or {}
        try:
            found = introspect(ctx, resource.name, spec)
            tags = column_tags(spec, found)
        except DepotError as exc:
            return Outcome.failure(f"depot '{resource.name}': {exc}")
        kind = spec.get("kind")
        ctx.store.catalog.replace_owner_datasets(resource.id, [
            {"address": f"depot://{resource.name}/{f.name}", "kind": kind, "format": f.format,
             "location": f.location, "row_count": f.row_count, "description": None, "tags": [],
             "columns": [{"name": c, "type": t, "tags": tags.get((f.name, c), [])} for c, t in f.columns]}
            for f in found])
        names = [f.name for f in found]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        message = f"reachable; {len(found)} dataset(s) introspected" + (f": {shown}" if names else "")
        return Outcome.success(message, datasets=len(found))

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        ctx.store.catalog.drop_owner(record.id)
        return Outcome.success("removed from the catalog (the data itself is untouched)")

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        if not record.spec:
            return None
        try:
            found = introspect(ctx, record.name, record.spec.get("depot") or {})
        except DepotError as exc:
            return {"error": f"depot '{record.name}': {exc}"}
        return {"datasets": {f.name: [[c, t] for c, t in f.columns] for f in found}}
