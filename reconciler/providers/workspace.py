"""workspace: a schema of its own in the platform's lake, and a run directory.

The lake is a DuckDB file that workflows write into; it is opened only for the
length of one call so that no connection outlives the operation that needed it.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import duckdb

from reconciler.core.record import Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def lake_connection(lake_path: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    from reconciler.store import lakegate

    lake_path.parent.mkdir(parents=True, exist_ok=True)
    with lakegate.exclusive(lake_path):
        conn = lakegate.connect_for_writing(lake_path)
        try:
            yield conn
        finally:
            lakegate.release(lake_path, conn)


def schema_tables(conn: duckdb.DuckDBPyConnection, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = ? ORDER BY table_name", [schema]).fetchall()
    return [r[0] for r in rows]


def schema_exists(conn: duckdb.DuckDBPyConnection, schema: str) -> bool:
    return conn.execute(
        "SELECT count(*) FROM information_schema.schemata WHERE catalog_name = current_database() "
        "AND schema_name = ?", [schema]).fetchone()[0] > 0


def _lake_failure(name: str, lake: Path, exc: Exception) -> Outcome:
    return Outcome.failure(f"workspace '{name}': cannot open the lake {lake}: {exc}; "
                           "if another reconciler process is using it, retry when it has finished")


class WorkspaceProvider:
    type = "workspace"

    def apply(self, ctx: ApplyContext, resource: Resource, prior: Record | None) -> Outcome:
        name = resource.name
        try:
            with lake_connection(ctx.lake_path) as conn:
                conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(name)}")
        except duckdb.Error as exc:
            return _lake_failure(name, ctx.lake_path, exc)
        run_dir = ctx.run_dir(name)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            return Outcome.failure(f"workspace '{name}': cannot create run directory {run_dir}: {exc.strerror}")
        return Outcome.success(f"schema {name} in the lake, runs in {run_dir}", schema=name, run_dir=str(run_dir))

    def delete(self, ctx: ApplyContext, record: Record) -> Outcome:
        name = record.name
        if ctx.lake_path.exists():
            try:
                with lake_connection(ctx.lake_path) as conn:
                    tables = schema_tables(conn, name)
                    if tables:
                        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
                        return Outcome.failure(
                            f"workspace '{name}': its lake schema still holds {len(tables)} table(s) ({shown}); "
                            "delete the workflows that write them and drop the tables, then apply again")
                    conn.execute(f"DROP SCHEMA IF EXISTS {quote_ident(name)}")
            except duckdb.Error as exc:
                return _lake_failure(name, ctx.lake_path, exc)
        shutil.rmtree(ctx.run_dir(name), ignore_errors=True)
        return Outcome.success(f"schema {name} dropped, run directory removed")

    def observe(self, ctx: ApplyContext, record: Record) -> dict | None:
        name = record.name
        observed = {"schema": False, "tables": [], "run_dir": ctx.run_dir(name).is_dir()}
        if not ctx.lake_path.exists():
            return observed
        try:
            with lake_connection(ctx.lake_path) as conn:
                observed["schema"] = schema_exists(conn, name)
                observed["tables"] = schema_tables(conn, name)
        except duckdb.Error:
            return None  # the lake is busy in another process: cannot observe now
        return observed
