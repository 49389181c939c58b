"""The state database's schema as an ordered list of migrations.

`MIGRATIONS[i]` takes the database from version i to version i+1. Each one runs
in its own transaction together with the version bump, so a crash leaves the
database at a whole version; every script is written with IF NOT EXISTS so that
running it again is harmless. Add a migration by appending a script; never edit
one that has shipped.

Timestamps are ISO-8601 UTC strings (sortable, and readable without pytz);
JSON columns hold documents the store encodes and decodes itself.
"""
from __future__ import annotations

import duckdb

from reconciler.core.diagnostics import UserError

MIGRATIONS: list[str] = [
    # 1: resource state, its history, the catalog
    """
    CREATE TABLE IF NOT EXISTS meta (
        key VARCHAR PRIMARY KEY,
        value VARCHAR
    );
    INSERT INTO meta VALUES ('serial', '0') ON CONFLICT (key) DO NOTHING;

    CREATE TABLE IF NOT EXISTS resources (
        id VARCHAR PRIMARY KEY,
        type VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        workspace VARCHAR,
        spec JSON,
        hash VARCHAR,
        target_hash VARCHAR,
        phase VARCHAR NOT NULL,
        message VARCHAR,
        "commit" VARCHAR,
        file VARCHAR,
        depends_on JSON,
        prune BOOLEAN,
        bundle VARCHAR,
        outputs JSON,
        created_at VARCHAR,
        updated_at VARCHAR,
        applied_at VARCHAR
    );

    CREATE TABLE IF NOT EXISTS resource_history (
        id VARCHAR NOT NULL,
        serial BIGINT NOT NULL,
        "at" VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        phase VARCHAR,
        message VARCHAR,
        "commit" VARCHAR,
        hash VARCHAR
    );

    CREATE TABLE IF NOT EXISTS datasets (
        address VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        owner_resource VARCHAR,
        workspace VARCHAR,
        format VARCHAR,
        location VARCHAR,
        row_count BIGINT,
        description VARCHAR,
        tags JSON,
        updated_at VARCHAR
    );

    CREATE TABLE IF NOT EXISTS columns (
        address VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        type VARCHAR,
        ordinal INTEGER NOT NULL,
        tags JSON
    );

    CREATE TABLE IF NOT EXISTS dataproducts (
        name VARCHAR PRIMARY KEY,
        domain VARCHAR,
        owner VARCHAR,
        spec JSON,
        updated_at VARCHAR
    );
    """,
    # 2: workflow runs and jobs, lineage, quality results, column profiles; lake tables' owner and last run
    """
    CREATE TABLE IF NOT EXISTS runs (
        run_id VARCHAR PRIMARY KEY,
        workflow_id VARCHAR NOT NULL,
        "commit" VARCHAR,
        trigger_key VARCHAR,
        "trigger" VARCHAR,
        status VARCHAR NOT NULL,
        message VARCHAR,
        started_at VARCHAR,
        ended_at VARCHAR,
        rows_in BIGINT,
        rows_out BIGINT,
        resumed INTEGER DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS jobs (
        run_id VARCHAR NOT NULL,
        job VARCHAR NOT NULL,
        stack VARCHAR,
        status VARCHAR NOT NULL,
        attempts INTEGER DEFAULT 0,
        started_at VARCHAR,
        ended_at VARCHAR,
        rows_in BIGINT,
        rows_out BIGINT,
        message VARCHAR,
        log_path VARCHAR,
        external_id VARCHAR,
        PRIMARY KEY (run_id, job)
    );
    CREATE TABLE IF NOT EXISTS lineage_edges (
        source VARCHAR NOT NULL,
        target VARCHAR NOT NULL,
        workflow_id VARCHAR NOT NULL,
        job VARCHAR NOT NULL,
        run_id VARCHAR,
        "at" VARCHAR
    );
    CREATE TABLE IF NOT EXISTS column_lineage (
        target VARCHAR NOT NULL,
        target_column VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        source_column VARCHAR NOT NULL,
        workflow_id VARCHAR NOT NULL,
        job VARCHAR NOT NULL,
        run_id VARCHAR
    );
    CREATE TABLE IF NOT EXISTS quality_results (
        run_id VARCHAR NOT NULL,
        job VARCHAR NOT NULL,
        dataset VARCHAR NOT NULL,
        name VARCHAR NOT NULL,
        check_type VARCHAR,
        severity VARCHAR,
        passed BOOLEAN,
        failing_rows BIGINT,
        sample JSON,
        message VARCHAR,
        columns JSON,
        "at" VARCHAR
    );
    CREATE TABLE IF NOT EXISTS column_profiles (
        address VARCHAR NOT NULL,
        column_name VARCHAR NOT NULL,
        stats JSON,
        run_id VARCHAR,
        "at" VARCHAR
    );
    ALTER TABLE datasets ADD COLUMN IF NOT EXISTS owner VARCHAR;
    ALTER TABLE datasets ADD COLUMN IF NOT EXISTS last_run VARCHAR;
    """,
    # 3: data products' measured side: service probes, SLO results, each product's health
    """
    CREATE TABLE IF NOT EXISTS service_checks (
        service_id VARCHAR NOT NULL,
        "at" VARCHAR NOT NULL,
        ok BOOLEAN,
        status INTEGER,
        detail VARCHAR
    );
    CREATE TABLE IF NOT EXISTS slo_results (
        product VARCHAR NOT NULL,
        slo VARCHAR NOT NULL,
        kind VARCHAR,
        value DOUBLE,
        target DOUBLE,
        ok BOOLEAN,
        detail VARCHAR,
        "at" VARCHAR NOT NULL
    );
    CREATE TABLE IF NOT EXISTS dataproduct_health (
        product VARCHAR PRIMARY KEY,
        state VARCHAR NOT NULL,
        detail VARCHAR,
        "at" VARCHAR
    );
    """,
    # 4: a finished job's findings (lineage, catalog entries, quality results, profiles) kept with its row as
    # one JSON value until they are written out into their tables (store/runs.py); NULL once they are
    """
    ALTER TABLE jobs ADD COLUMN IF NOT EXISTS findings VARCHAR;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


def schema_version(conn: duckdb.DuckDBPyConnection) -> int:
    """0 for an empty database."""
    has_meta = conn.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_catalog = current_database() AND table_schema = 'main' AND table_name = 'meta'"
    ).fetchone()[0]
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def check_not_newer(version: int, where: str, known: int = SCHEMA_VERSION) -> None:
    if version > known:
        raise UserError(
            f"state was written by a newer reconciler (schema version {version}; this one knows up to "
            f"{known}): {where}",
            hint="upgrade reconciler, or point it at another state directory",
        )


def migrate(conn: duckdb.DuckDBPyConnection, where: str, migrations: list[str] | None = None) -> int:
    """Bring the database to the last version of `migrations` (default MIGRATIONS);
    returns the version found before."""
    migrations = MIGRATIONS if migrations is None else migrations
    found = schema_version(conn)
    check_not_newer(found, where, len(migrations))
    for version in range(found, len(migrations)):
        conn.begin()
        try:
            conn.execute(migrations[version])
            conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                [str(version + 1)],
            )
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return found
