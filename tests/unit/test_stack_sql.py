"""The sql stack and column lineage, on real files and a real lake file."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import yaml

from reconciler.stacks.lineage import column_lineage
from reconciler.stacks.sql import SqlStack, user_positions
from tests.unit.test_datasets import TestLake, depot, make_ctx

SAMPLE_REPO = Path(__file__).resolve().parents[2] / "sample-repo"


def _load(path: Path) -> dict:
    return yaml.load(path.read_text(), Loader=yaml.CSafeLoader)


def _sqlglot():
    try:
        import sqlglot  # noqa: F401
    except ImportError:
        pytest.fail("sqlglot is not installed: column lineage needs it (add sqlglot to pyproject's dependencies)")


@pytest.fixture
def lake(tmp_path):
    lake = TestLake(tmp_path / "lake.duckdb")
    yield lake
    lake.conn.close()


@pytest.fixture
def shop(tmp_path):
    """A file depot with orders.csv and customers.csv."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "orders.csv").write_text("id,customer_id,amount\n1,10,5.0\n2,10,-1.0\n3,11,7.5\n4,12,2.0\n")
    (data / "customers.csv").write_text("id,name,country\n10,Ann,FR\n11,Bob,DE\n12,Cid,FR\n")
    return {"shop": depot("shop", kind="file", path="data")}


def sql_spec(steps, outputs, inputs=(("orders", "depot://shop/orders"),)):
    return {"inputs": [{"name": n, "dataset": d} for n, d in inputs],
            "steps": [{"name": n, "sql": s} for n, s in steps], "outputs": outputs}


def test_sample_workflow_end_to_end(tmp_path, lake):
    _sqlglot()
    workflow = _load(SAMPLE_REPO / "workflows" / "transactions-daily.yaml")
    jobs = {job["name"]: job for job in workflow["workflow"]["dag"]}
    depots = {doc["name"]: doc for doc in map(_load, sorted((SAMPLE_REPO / "depots").glob("*.yaml")))}
    lines = []
    ws = workflow["workspace"]

    def ctx(job):
        return make_ctx(tmp_path, lake, jobs[job]["spec"], workspace=ws, depots=depots, repo_dir=SAMPLE_REPO,
                        log=lines.append)

    clean = SqlStack().run(ctx("clean"))
    assert clean.ok, clean.message
    assert clean.inputs == ["depot://raw-transactions/transactions", "depot://merchants/merchants"]
    assert clean.rows_in == 1200 + 40
    table = lake.cursor().execute("SELECT count(*), count(*) FILTER (WHERE amount <= 0) FROM payments.transactions_clean")
    assert table.fetchall() == [(clean.rows_out, 0)]
    [written] = clean.outputs
    assert written.address == "lake://payments/transactions_clean" and written.row_count == clean.rows_out
    assert ("amount", "DECIMAL(12,2)") in written.columns and ("loaded_at", "TIMESTAMP WITH TIME ZONE") in written.columns
    lineage = clean.column_lineage["lake://payments/transactions_clean"]
    assert lineage["merchant_name"] == [("depot://merchants/merchants", "name")]
    assert lineage["amount"] == [("depot://raw-transactions/transactions", "amount")]
    assert lineage["loaded_at"] == []
    assert "-- step: joined" in clean.sql and "-- step: valid" in clean.sql
    assert any(line.startswith("output lake://payments/transactions_clean") for line in lines)

    totals = SqlStack().run(ctx("daily-totals"))
    assert totals.ok, totals.message
    assert totals.rows_in == clean.rows_out
    approved = lake.cursor().execute(
        "SELECT sum(transactions), sum(total_amount) = (SELECT sum(amount) FROM payments.transactions_clean "
        "WHERE status = 'approved') FROM payments.merchant_daily_totals").fetchall()[0]
    assert approved[1] is True and approved[0] > 0
    assert totals.column_lineage["lake://payments/merchant_daily_totals"]["day"] == [
        ("lake://payments/transactions_clean", "ts")]


def test_steps_chain_and_outputs_from_inputs(tmp_path, lake, shop):
    spec = sql_spec([("positive", "SELECT * FROM orders WHERE amount > 0"),
                     ("big", "SELECT id, amount * 2 AS doubled FROM positive;")],
                    [{"from": "big", "dataset": "lake://ws/big"},
                     {"from": "orders", "dataset": "lake://ws/raw_copy", "mode": "append"}])
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert result.ok, result.message
    assert (result.rows_in, result.rows_out) == (4, 3 + 4)
    assert [o.address for o in result.outputs] == ["lake://ws/big", "lake://ws/raw_copy"]
    assert result.column_lineage["lake://ws/raw_copy"]["amount"] == [("depot://shop/orders", "amount")]
    cur = lake.cursor()
    assert cur.execute("SELECT sum(doubled) FROM ws.big").fetchall() == [(29.0,)]
    # temp views of the job are gone from the lake
    assert cur.execute("SELECT count(*) FROM duckdb_views() WHERE view_name IN ('big', 'positive', 'orders')"
                       ).fetchall() == [(0,)]


def test_parse_and_binder_errors_keep_duckdb_positions(tmp_path, lake, shop):
    spec = sql_spec([("ok", "SELECT * FROM orders"), ("valid", "SELECT id,\n  amount\nFROM ok WHERE amount >> > 0")],
                    [{"from": "valid", "dataset": "lake://ws/v"}])
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert not result.ok and not result.retryable
    assert result.message.startswith("step 'valid': Parser Error: syntax error at or near")
    assert "LINE 3: FROM ok WHERE amount >> > 0" in result.message

    spec["steps"][1]["sql"] = "SELECT id,\n  amout\nFROM ok"
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert result.message.startswith("step 'valid': Binder Error: Referenced column \"amout\" not found")
    # the caret stays under the column on the user's own line 2
    lines = result.message.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("LINE 2:   amout"))
    assert lines[at + 1].index("^") == lines[at].index("amout")

    spec["steps"][1]["sql"] = "SELECT 1 AS a; DROP TABLE ws.v"
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert result.message == "step 'valid': a step is one SELECT query; this one has 2 statements"
    assert not lake.cursor().execute("SELECT count(*) FROM duckdb_tables() WHERE schema_name = 'ws'").fetchall()[0][0]


def test_user_positions_renumbers_lines():
    message = 'Binder Error: x\n\nLINE 10: SELECT y\n          ^'
    assert user_positions(message) == 'Binder Error: x\n\nLINE 9: SELECT y\n         ^'


def test_input_and_output_failures(tmp_path, lake, shop):
    spec = sql_spec([("s", "SELECT * FROM orders")], [{"from": "s", "dataset": "lake://ws/out"}],
                    inputs=[("orders", "depot://shop/orders"), ("prev", "lake://ws/never_written")])
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert result.message == ("input 'prev': dataset lake://ws/never_written does not exist "
                              "(no workflow has written it yet?)")
    assert not result.ok and not result.retryable

    spec = sql_spec([("s", "SELECT * FROM orders")], [{"from": "s", "dataset": "lake://elsewhere/out"}])
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert not result.ok and "a workflow may only write into its own workspace (ws)" in result.message

    spec = sql_spec([("s", "SELECT * FROM orders")], [{"from": "s", "dataset": "lake://ws/out", "mode": "merge"}])
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert not result.ok and "merge output needs keys" in result.message


def test_merge_through_the_stack(tmp_path, lake, shop):
    spec = sql_spec([("s", "SELECT id, amount FROM orders")],
                    [{"from": "s", "dataset": "lake://ws/o", "mode": "merge", "keys": ["id"]}])
    assert SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop)).rows_out == 4
    spec["steps"][0]["sql"] = "SELECT id + 2 AS id, amount * 10 AS amount FROM orders"
    result = SqlStack().run(make_ctx(tmp_path, lake, spec, depots=shop))
    assert result.ok and result.rows_out == 4 and result.outputs[0].row_count == 6
    assert lake.cursor().execute("SELECT id, amount FROM ws.o ORDER BY id").fetchall() == [
        (1, 5.0), (2, -1.0), (3, 50.0), (4, -10.0), (5, 75.0), (6, 20.0)]


def test_deadline_interrupts_a_slow_query(tmp_path, lake):
    spec = sql_spec([("slow", "SELECT count(*) AS n FROM range(100000000) a, range(100000000) b WHERE a.range <> b.range")],
                    [{"from": "slow", "dataset": "lake://ws/slow"}], inputs=())
    ctx = make_ctx(tmp_path, lake, spec)
    ctx.deadline = time.monotonic() + 0.5
    result = SqlStack().run(ctx)
    assert not result.ok and result.message == "timed out after 500ms"
    assert lake.cursor().execute("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'slow'").fetchall() == [(0,)]


def test_cancel_interrupts_a_slow_query(tmp_path, lake):
    spec = sql_spec([("slow", "SELECT count(*) AS n FROM range(100000000) a, range(100000000) b WHERE a.range <> b.range")],
                    [{"from": "slow", "dataset": "lake://ws/slow"}], inputs=())
    ctx = make_ctx(tmp_path, lake, spec)
    # cancel once the write has started (its log line comes after the steps)
    ctx.log = lambda line: line.startswith("step slow") and threading.Timer(0.1, ctx.cancel.set).start()
    result = SqlStack().run(ctx)
    assert (result.ok, result.message, result.retryable) == (False, "cancelled", False)


def test_a_stopped_watchdog_lets_go_of_its_cursor(tmp_path, lake):
    """The monitor thread is a daemon: if it held a cursor's last reference, the cursor would be destroyed
    there, and a DuckDB connection destroyed on a daemon thread while the interpreter exits aborts the
    process (duckdb#13904; seen as a rare SIGABRT at the end of `apply`). Once stopped, no watchdog keeps one."""
    from reconciler.stacks import sql

    made = []
    real = sql.Watchdog.__init__

    def record(self, ctx, cur):
        real(self, ctx, cur)
        made.append(self)

    sql.Watchdog.__init__ = record
    try:
        spec = sql_spec([("s", "SELECT 1 AS a")], [{"from": "s", "dataset": "lake://ws/one"}], inputs=())
        assert SqlStack().run(make_ctx(tmp_path, lake, spec)).ok
    finally:
        sql.Watchdog.__init__ = real
    assert made and all(dog.cur is None for dog in made)
    assert not sql._MONITOR._dogs


# ---- column lineage --------------------------------------------------------------------------


def test_lineage_through_two_steps_and_a_join():
    _sqlglot()
    inputs = {"orders": "depot://shop/orders", "customers": "depot://shop/customers"}
    steps = [("joined", "SELECT o.id, o.amount, c.name AS customer, c.country FROM orders o "
                        "JOIN customers c ON c.id = o.customer_id"),
             ("by_country", "SELECT country, sum(amount) AS total, count(*) AS n, "
                            "max(customer || '@' || country) AS label FROM joined GROUP BY country")]
    lineage = column_lineage(steps, inputs, "by_country", ["country", "total", "n", "label"])
    assert lineage == {
        "country": [("depot://shop/customers", "country")],
        "total": [("depot://shop/orders", "amount")],
        "n": [],
        "label": [("depot://shop/customers", "country"), ("depot://shop/customers", "name")],
    }


def test_lineage_expands_stars_with_schemas():
    _sqlglot()
    inputs = {"raw": "lake://ws/raw"}
    steps = [("a", "SELECT * FROM raw WHERE Amount > 0"), ("b", "SELECT *, 1 AS one FROM a")]
    schemas = {"raw": {"id": "BIGINT", "Amount": "DECIMAL(12,2)", "tags": "VARCHAR[]"}}
    lineage = column_lineage(steps, inputs, "b", ["id", "Amount", "tags", "one"], schemas)
    assert lineage == {"id": [("lake://ws/raw", "id")], "Amount": [("lake://ws/raw", "Amount")],
                       "tags": [("lake://ws/raw", "tags")], "one": []}


def test_lineage_is_remembered_by_sql_and_schemas_and_handed_out_as_copies():
    _sqlglot()
    from reconciler.stacks.lineage import _remembered

    inputs = {"raw": "lake://ws/raw"}
    steps = [("a", "SELECT id, amount * 2 AS doubled FROM raw")]
    first = column_lineage(steps, inputs, "a", ["id", "doubled"], {"raw": {"id": "BIGINT", "amount": "DOUBLE"}})
    first["doubled"].append(("tampered", "x"))  # a caller's change stays its own
    hits = _remembered.cache_info().hits
    again = column_lineage(steps, inputs, "a", ["id", "doubled"], {"raw": {"id": "BIGINT", "amount": "DOUBLE"}})
    assert _remembered.cache_info().hits == hits + 1
    assert again == {"id": [("lake://ws/raw", "id")], "doubled": [("lake://ws/raw", "amount")]}
    # another schema is another trace: `SELECT *` expands to what the input has now
    star = [("a", "SELECT * FROM raw")]
    assert column_lineage(star, inputs, "a", ["id"], {"raw": {"id": "BIGINT"}}) == {"id": [("lake://ws/raw", "id")]}
    assert column_lineage(star, inputs, "a", ["id", "y"], {"raw": {"id": "BIGINT", "y": "INT"}}) == {
        "id": [("lake://ws/raw", "id")], "y": [("lake://ws/raw", "y")]}


def test_lineage_never_raises():
    for steps in ([("a", "SELEC garbage ((")], [("a", "PIVOT raw ON x USING sum(y)")], []):
        result = column_lineage(steps, {"raw": "lake://ws/raw"}, "a", ["x", "y"])
        assert set(result) == {"x", "y"} and all(isinstance(v, list) for v in result.values())


def test_parallel_jobs_share_the_lake(tmp_path, lake):
    """The runner's threads: one cursor each, ATTACHes of one DuckDB depot and a schema created concurrently."""
    import duckdb
    setup = duckdb.connect(str(tmp_path / "wh.duckdb"))
    setup.execute("CREATE TABLE t AS SELECT range AS id FROM range(1000)")
    setup.close()
    depots = {"wh": depot("wh", kind="duckdb", path="wh.duckdb")}
    results = {}

    def job(i):
        spec = sql_spec([("s", f"SELECT id, id * {i} AS v FROM t")], [{"from": "s", "dataset": f"lake://par/t{i}"}],
                        inputs=[("t", "depot://wh/t")])
        results[i] = SqlStack().run(make_ctx(tmp_path, lake, spec, workspace="par", depots=depots))

    threads = [threading.Thread(target=job, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(r.ok for r in results.values()), [r.message for r in results.values()]
    cur = lake.cursor()
    assert cur.execute("SELECT sum(v) FROM par.t5").fetchall() == [(5 * 999 * 1000 // 2,)]
    assert cur.execute("SELECT count(*) FROM duckdb_databases() WHERE path LIKE '%wh.duckdb'").fetchall() == [(0,)]
