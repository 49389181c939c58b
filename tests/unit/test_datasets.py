"""Dataset addresses as DuckDB relations: real CSV/Parquet/JSON files, DuckDB and SQLite files,
PostgreSQL on 127.0.0.1:5432, and lake tables, read and written through one lake connection."""
from __future__ import annotations

import datetime as dt
import decimal
import json
import sqlite3
import uuid
from pathlib import Path

import duckdb
import pytest

from reconciler.stacks.base import JobContext
from reconciler.stacks.datasets import (DatasetError, describe, json_safe, lake_table, parse_address, register_input,
                                        release_inputs, row_count, write_output, written_rows)


class TestLake:
    """The run's lake as the runner gives it: one DuckDB connection, a cursor per calling thread."""
    __test__ = False

    def __init__(self, path):
        self.path = Path(path)
        self.conn = duckdb.connect(str(path))

    def cursor(self):
        return self.conn.cursor()


def make_ctx(tmp_path: Path, lake: TestLake, spec: dict | None = None, *, workspace: str = "ws",
             depots: dict | None = None, repo_dir: Path | None = None, stack: str = "sql", **extra) -> JobContext:
    return JobContext(workflow="wf", workflow_id=f"workflow:{workspace}/wf", workspace=workspace, job="job",
                      stack=stack, spec=spec or {}, run_id="run-1", attempt=1, commit=None, state_dir=tmp_path,
                      repo_dir=repo_dir or tmp_path, job_dir=tmp_path / "job", run_dir=tmp_path / "run", lake=lake,
                      depots=depots or {}, environ={}, **{"log": lambda line: None, **extra})


def depot(name: str, **section) -> dict:
    return {"version": "v1", "type": "depot", "name": name, "depot": section}


@pytest.fixture
def lake(tmp_path):
    lake = TestLake(tmp_path / "lake.duckdb")
    yield lake
    lake.conn.close()


def rows(cur, sql):
    return cur.execute(sql).fetchall()


# ---- addresses -----------------------------------------------------------------------------


def test_addresses():
    assert parse_address("lake://my-ws/orders") == ("lake", "my-ws", "orders")
    assert parse_address("depot://raw/sales.daily") == ("depot", "raw", "sales.daily")
    assert lake_table("lake://my-ws/orders") == '"my-ws"."orders"'
    with pytest.raises(DatasetError, match="not a dataset address"):
        parse_address("s3://bucket/x")
    with pytest.raises(DatasetError, match="not a lake table"):
        lake_table("depot://raw/x")


# ---- reading depots --------------------------------------------------------------------------


def test_file_depot_csv_parquet_json(tmp_path, lake):
    data = tmp_path / "repo" / "data"
    (data / "events").mkdir(parents=True)
    (data / "orders.csv").write_text("id,amount\n1,2.5\n2,3.5\n3,\n")
    (data / "people.json").write_text('[{"name": "a", "age": 3}, {"name": "b", "age": 4}]')
    setup = duckdb.connect()
    for i in range(2):
        setup.execute(f"COPY (SELECT {i} * 10 + range AS n FROM range(10)) TO "
                      f"'{data / 'events' / f'part-{i}.parquet'}' (FORMAT parquet)")
    setup.close()
    ctx = make_ctx(tmp_path, lake, repo_dir=tmp_path / "repo", depots={"raw": depot("raw", kind="file", path="data")})
    cur = lake.cursor()
    assert register_input(cur, ctx, "orders", "depot://raw/orders") == 3
    assert register_input(cur, ctx, "events", "depot://raw/events") == 20
    assert register_input(cur, ctx, "people", "depot://raw/people") == 2
    assert rows(cur, "SELECT sum(amount), count(amount) FROM orders") == [(6.0, 2)]
    assert rows(cur, "SELECT min(n), max(n) FROM events") == [(0, 19)]
    assert rows(cur, "SELECT name FROM people ORDER BY age") == [("a",), ("b",)]
    release_inputs(cur)
    with pytest.raises(duckdb.CatalogException):
        cur.execute("SELECT * FROM orders")

    # an absolute path, and a format given by the depot: the JSON file is not a dataset then
    ctx = make_ctx(tmp_path, lake, depots={"abs": depot("abs", kind="file", path=str(data), format="csv")})
    with pytest.raises(DatasetError, match=r"no file or folder named people in .*\(datasets there: orders\)"):
        register_input(cur, ctx, "people", "depot://abs/people")


def test_a_run_counts_a_depot_file_once_until_it_changes(tmp_path, lake):
    """The runner's lake keeps row counts: the second job reading the same files takes the first one's count
    (no count(*) again), and a file rewritten during the run (a shell job, say) is counted afresh."""
    data = tmp_path / "repo" / "data"
    data.mkdir(parents=True)
    (data / "orders.csv").write_text("id\n1\n2\n")
    lake.row_counts = {}
    ctx = make_ctx(tmp_path, lake, repo_dir=tmp_path / "repo", depots={"raw": depot("raw", kind="file", path="data")})
    cur = lake.cursor()
    assert register_input(cur, ctx, "a", "depot://raw/orders") == 2
    [(key, count)] = lake.row_counts.items()
    lake.row_counts[key] = 99  # what the cache says is what the next job gets: it did not count again
    assert register_input(cur, ctx, "b", "depot://raw/orders") == 99
    (data / "orders.csv").write_text("id\n1\n2\n3\n")
    assert register_input(cur, ctx, "c", "depot://raw/orders") == 3
    assert rows(cur, "SELECT count(*) FROM c") == [(3,)]


def test_depot_errors_name_the_address(tmp_path, lake):
    cur = lake.cursor()
    ctx = make_ctx(tmp_path, lake, depots={
        "gone": depot("gone", kind="file", path="nowhere"),
        "listed": depot("listed", kind="file", path=".", datasets=["a"]),
        "db": depot("db", kind="sqlite", path="missing.sqlite"),
    })
    with pytest.raises(DatasetError, match=r"cannot read depot://nope/x: there is no depot 'nope' \(depots: db, gone"):
        register_input(cur, ctx, "x", "depot://nope/x")
    with pytest.raises(DatasetError, match="depot://gone/x: folder nowhere does not exist"):
        register_input(cur, ctx, "x", "depot://gone/x")
    with pytest.raises(DatasetError, match="depot 'listed' lists datasets a; add b"):
        register_input(cur, ctx, "x", "depot://listed/b")
    with pytest.raises(DatasetError, match="depot://db/t: file missing.sqlite does not exist") as err:
        register_input(cur, ctx, "x", "depot://db/t")
    assert not err.value.retryable


def test_duckdb_depot_attaches_read_only_and_detaches(tmp_path, lake):
    path = tmp_path / "wh.duckdb"
    setup = duckdb.connect(str(path))
    setup.execute("CREATE TABLE orders AS SELECT range AS id FROM range(7)")
    setup.execute("CREATE SCHEMA sales")
    setup.execute("CREATE TABLE sales.daily AS SELECT 1 AS day, 2.5 AS total")
    setup.close()
    ctx = make_ctx(tmp_path, lake, depots={"wh": depot("wh", kind="duckdb", path="wh.duckdb")})
    cur = lake.cursor()
    before = rows(cur, "SELECT count(*) FROM duckdb_databases()")
    assert register_input(cur, ctx, "o", "depot://wh/orders") == 7
    assert register_input(cur, ctx, "d", "depot://wh/sales.daily") == 1
    assert rows(cur, "SELECT sum(id) FROM o") == [(21,)]
    assert rows(cur, "SELECT total FROM d") == [(decimal.Decimal("2.5"),)]
    alias = rows(cur, f"SELECT database_name FROM duckdb_databases() WHERE path = '{path}'")[0][0]
    with pytest.raises(duckdb.Error, match="read-only"):  # a job cannot change a depot
        cur.execute(f'INSERT INTO "{alias}".orders VALUES (9)')
    with pytest.raises(DatasetError, match=r"has no table nope \(tables: orders, sales.daily\)"):
        register_input(cur, ctx, "n", "depot://wh/nope")
    release_inputs(cur)
    assert rows(cur, "SELECT count(*) FROM duckdb_databases()") == before


def test_sqlite_depot_types_and_nulls(tmp_path, lake):
    path = tmp_path / "m.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE merchants (id INTEGER PRIMARY KEY, name TEXT, score REAL, extra NUMERIC)")
    conn.executemany("INSERT INTO merchants VALUES (?, ?, ?, ?)", [(1, "a", 0.5, 3), (2, None, None, "x")])
    conn.execute("CREATE TABLE empty (id INTEGER, label TEXT)")
    conn.commit()
    conn.close()
    ctx = make_ctx(tmp_path, lake, depots={"m": depot("m", kind="sqlite", path=str(path))})
    cur = lake.cursor()
    assert register_input(cur, ctx, "merchants", "depot://m/merchants") == 2
    assert dict((r[0], r[1]) for r in rows(cur, "DESCRIBE merchants")) == {
        "id": "BIGINT", "name": "VARCHAR", "score": "DOUBLE", "extra": "VARCHAR"}  # mixed values: text
    assert rows(cur, "SELECT id, name, score, extra FROM merchants ORDER BY id") == [(1, "a", 0.5, "3"),
                                                                                   (2, None, None, "x")]
    assert register_input(cur, ctx, "empty", "depot://m/empty") == 0
    assert dict((r[0], r[1]) for r in rows(cur, "DESCRIBE empty")) == {"id": "BIGINT", "label": "VARCHAR"}
    with pytest.raises(DatasetError, match=r"has no table nope \(tables: empty, merchants\)"):
        register_input(cur, ctx, "x", "depot://m/nope")


# ---- postgres -------------------------------------------------------------------------------


@pytest.fixture
def pg_schema(pg_conn):
    conn = pg_conn
    schema = "ds_" + uuid.uuid4().hex[:10]
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(f"CREATE TABLE {schema}.payments (id integer, amount numeric(10, 2), note text, paid_at timestamptz, "
                 "ref uuid, meta jsonb, ok boolean, day date)")
    conn.execute(f"INSERT INTO {schema}.payments VALUES "
                 "(1, 12.50, 'first', '2025-01-02 03:04:05+00', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', "
                 "'{\"k\": 1}', true, '2025-01-02'), (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL)")
    conn.execute(f"CREATE TABLE {schema}.empty (id bigint, amount numeric(8, 3))")
    yield schema
    conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.mark.postgres
def test_postgres_depot(tmp_path, lake, pg_schema):
    pg = depot("pg", kind="postgres", host="127.0.0.1", port=5432, database="test", user="postgres",
               schema=pg_schema, password={"secret": "pg-password"})
    # the runner resolved the depot's secret: trust auth ignores the value, but it must be found
    ctx = make_ctx(tmp_path, lake, depots={"pg": pg}, runtime_secrets={"public/pg-password": "unused"})
    cur = lake.cursor()
    assert register_input(cur, ctx, "p", "depot://pg/payments") == 2
    types = dict((r[0], r[1]) for r in rows(cur, "DESCRIBE p"))
    assert types == {"id": "INTEGER", "amount": "DECIMAL(10,2)", "note": "VARCHAR",
                     "paid_at": "TIMESTAMP WITH TIME ZONE", "ref": "VARCHAR", "meta": "VARCHAR", "ok": "BOOLEAN",
                     "day": "DATE"}
    first = rows(cur, "SELECT id, amount, note, ref, meta, ok, day FROM p WHERE id = 1")[0]
    assert first == (1, decimal.Decimal("12.50"), "first", "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", '{"k": 1}', True,
                     dt.date(2025, 1, 2))
    assert register_input(cur, ctx, "e", "depot://pg/empty") == 0
    assert dict((r[0], r[1]) for r in rows(cur, "DESCRIBE e")) == {"id": "BIGINT", "amount": "DECIMAL(8,3)"}
    with pytest.raises(DatasetError, match=f"has no table {pg_schema}.nope"):
        register_input(cur, ctx, "x", "depot://pg/nope")


@pytest.mark.postgres
def test_postgres_password_from_secret_and_unreachable(tmp_path, lake):
    pg = depot("pg", kind="postgres", host="127.0.0.1", port=1, database="test", user="postgres",
               password={"secret": "pg-password"})
    ctx = make_ctx(tmp_path, lake, depots={"pg": pg})
    cur = lake.cursor()
    with pytest.raises(DatasetError, match="password: secret 'public/pg-password' is not defined"):
        register_input(cur, ctx, "x", "depot://pg/t")
    # the secret's definition read through the secret provider's own function, the value from ctx.environ
    ctx.secrets = {"secret:public/pg-password": {"secret": {"from": {"env": "PG_PW"}}}}
    ctx.environ = {"PG_PW": "s3cr3t-value"}
    with pytest.raises(DatasetError, match="cannot connect to postgres at 127.0.0.1:1") as err:
        register_input(cur, ctx, "x", "depot://pg/t")
    assert err.value.retryable
    assert "s3cr3t-value" not in err.value.message


# ---- the lake -------------------------------------------------------------------------------


def test_lake_input_and_missing_tables(tmp_path, lake):
    cur = lake.cursor()
    cur.execute('CREATE SCHEMA "my-ws"')
    cur.execute('CREATE TABLE "my-ws".t AS SELECT range AS id FROM range(4)')
    ctx = make_ctx(tmp_path, lake, workspace="my-ws")
    assert register_input(cur, ctx, "t", "lake://my-ws/t") == 4
    assert describe(cur, "lake://my-ws/t") == [("id", "BIGINT")]
    assert row_count(cur, "lake://my-ws/t") == 4
    for address in ("lake://my-ws/nothing", "lake://no-schema/t"):
        with pytest.raises(DatasetError, match=f"dataset {address} does not exist \\(no workflow has written it yet\\?\\)"):
            register_input(cur, ctx, "x", address)
    with pytest.raises(DatasetError, match="does not exist"):
        describe(cur, "lake://my-ws/nothing")


def test_write_modes(tmp_path, lake):
    ctx = make_ctx(tmp_path, lake, workspace="sales")
    cur = lake.cursor()
    first = write_output(cur, ctx, "lake://sales/t", "SELECT * FROM (VALUES (1, 'a'), (2, 'b')) v(id, name)",
                         "overwrite", None)
    assert (first.address, first.columns, first.row_count, first.mode) == (
        "lake://sales/t", [("id", "INTEGER"), ("name", "VARCHAR")], 2, "overwrite")
    assert written_rows(first) == 2

    # append matches columns by name, not position
    appended = write_output(cur, ctx, "lake://sales/t", "SELECT 'c' AS name, 3 AS id", "append", None)
    assert (appended.row_count, written_rows(appended)) == (3, 1)
    # append into a table that does not exist yet creates it
    assert write_output(cur, ctx, "lake://sales/fresh", "SELECT 1 AS x", "append", None).row_count == 1

    merged = write_output(cur, ctx, "lake://sales/t",
                          "SELECT * FROM (VALUES (2, 'B'), (4, 'd'), (NULL, 'n')) v(id, name)", "merge", ["id"])
    assert (merged.row_count, written_rows(merged)) == (5, 3)
    assert rows(cur, 'SELECT id, name FROM sales.t ORDER BY id NULLS LAST') == [
        (1, "a"), (2, "B"), (3, "c"), (4, "d"), (None, "n")]
    # a NULL key matches a NULL key: merging it again replaces, not duplicates
    write_output(cur, ctx, "lake://sales/t", "SELECT NULL::INTEGER AS id, 'm' AS name", "merge", ["id"])
    assert rows(cur, "SELECT name FROM sales.t WHERE id IS NULL") == [("m",)]

    overwritten = write_output(cur, ctx, "lake://sales/t", "SELECT 9 AS id", "overwrite", [])
    assert (overwritten.row_count, overwritten.columns) == (1, [("id", "INTEGER")])


def test_merge_needs_valid_unique_keys(tmp_path, lake):
    ctx = make_ctx(tmp_path, lake, workspace="sales")
    cur = lake.cursor()
    write_output(cur, ctx, "lake://sales/t", "SELECT 1 AS id, 'a' AS name", "overwrite", None)
    with pytest.raises(DatasetError, match="merge output needs keys"):
        write_output(cur, ctx, "lake://sales/t", "SELECT 1 AS id", "merge", [])
    with pytest.raises(DatasetError, match=r"keys code, sku are not columns of the output \(columns: id, name\)"):
        write_output(cur, ctx, "lake://sales/t", "SELECT 2 AS id, 'b' AS name", "merge", ["code", "sku"])
    with pytest.raises(DatasetError, match=r"keys nope are not columns"):  # also when the table is new
        write_output(cur, ctx, "lake://sales/new", "SELECT 2 AS id", "merge", ["nope"])
    with pytest.raises(DatasetError, match=r"1 key value\(s\) of \(id\) appear more than once"):
        write_output(cur, ctx, "lake://sales/t", "SELECT 2 AS id, 'b' AS name UNION ALL SELECT 2, 'c'", "merge", ["id"])
    assert rows(cur, "SELECT * FROM sales.t") == [(1, "a")]


def test_writes_stay_in_the_workspace_and_are_atomic(tmp_path, lake):
    ctx = make_ctx(tmp_path, lake, workspace="sales")
    cur = lake.cursor()
    with pytest.raises(DatasetError, match=r"a workflow may only write into its own workspace \(sales\); "
                                           r"write lake://sales/t"):
        write_output(cur, ctx, "lake://other/t", "SELECT 1 AS id", "overwrite", None)
    with pytest.raises(DatasetError, match="outputs go to lake://sales/TABLE"):
        write_output(cur, ctx, "depot://raw/t", "SELECT 1 AS id", "overwrite", None)
    assert rows(cur, "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'other'") == [(0,)]

    write_output(cur, ctx, "lake://sales/t", "SELECT range AS id FROM range(3)", "overwrite", None)
    # the failure happens while rows are being produced, after the replace began
    bad = "SELECT CAST(CASE WHEN range < 5 THEN '1' ELSE 'x' END AS INTEGER) AS id FROM range(10)"
    for mode in ("overwrite", "append", "merge"):
        with pytest.raises(DatasetError, match=f"cannot write lake://sales/t \\({mode}\\): Conversion Error"):
            write_output(cur, ctx, "lake://sales/t", bad, mode, ["id"] if mode == "merge" else None)
        assert rows(cur, "SELECT id FROM sales.t ORDER BY id") == [(0,), (1,), (2,)]
    with pytest.raises(DatasetError, match="does not have a column"):  # append of a column the table lacks
        write_output(cur, ctx, "lake://sales/t", "SELECT 5 AS id, 'x' AS extra", "append", None)
    assert rows(cur, "SELECT count(*) FROM sales.t") == [(3,)]
    # a merge that fails after deleting the rows it replaces puts them back
    write_output(cur, ctx, "lake://sales/pairs", "SELECT 1 AS id, 10 AS n", "overwrite", None)
    with pytest.raises(DatasetError, match=r"\(merge\): Conversion Error: Could not convert string 'x'"):
        write_output(cur, ctx, "lake://sales/pairs", "SELECT 1 AS id, 'x' AS n", "merge", ["id"])
    assert rows(cur, "SELECT id, n FROM sales.pairs") == [(1, 10)]
    assert not cur.execute("SELECT count(*) FROM duckdb_tables() WHERE temporary").fetchall()[0][0]


def test_json_safe():
    value = {"d": dt.date(2025, 1, 2), "t": dt.datetime(2025, 1, 2, 3, 4), "n": decimal.Decimal("1.50"),
             "b": b"\x01", "l": [decimal.Decimal("NaN"), float("inf"), uuid.UUID(int=1)], "x": None}
    safe = json_safe(value)
    json.dumps(safe)
    assert safe["d"] == "2025-01-02" and safe["n"] == 1.5 and safe["b"] == "01" and safe["l"][0] == "NaN"
