"""Run records written as the runner's recorder writes them: many items in one transaction must leave
exactly what writing them one at a time leaves (real state files, compared table by table)."""
from __future__ import annotations

import pytest

from reconciler.stacks.base import CheckResult, JobResult, TableWritten
from reconciler.store.runs import JobFinish, JobUpdate
from reconciler.store.state import StateStore

WF = "workflow:shop/orders"
TABLES = {
    "jobs": "run_id, job, stack, status, attempts, started_at, ended_at, rows_in, rows_out, message, log_path, "
            "external_id",
    "lineage_edges": "source, target, workflow_id, job, run_id, \"at\"",
    "column_lineage": "target, target_column, source, source_column, workflow_id, job, run_id",
    "quality_results": "run_id, job, dataset, name, check_type, severity, passed, failing_rows, sample, message, "
                       "columns, \"at\"",
    "column_profiles": "address, column_name, stats, run_id, \"at\"",
    "datasets": "address, kind, owner_resource, workspace, format, location, row_count, tags, owner, last_run",
    "columns": "address, name, type, ordinal, tags",
}


def _finish(job, result, ended="2026-01-01T00:00:01.000+00:00", column_tags=None):
    return JobFinish("run-2", WF, job, result, attempts=1, owner="team", workspace="shop", tags=["gold"],
                     column_tags=column_tags or {}, ended=ended)


def _items():
    clean = JobResult(True, "1 output(s)", rows_in=10, rows_out=8, inputs=["depot://raw/orders"],
                      outputs=[TableWritten("lake://shop/clean", [("id", "BIGINT"), ("card", "VARCHAR")], 8)],
                      column_lineage={"lake://shop/clean": {"id": [("depot://raw/orders", "id")],
                                                            "card": [("depot://raw/orders", "card")]}})
    # reads the table `clean` wrote in the same batch: its `card` column inherits `pii` from there
    rollup = JobResult(True, "1 output(s)", rows_in=8, rows_out=2, inputs=["lake://shop/clean"],
                       outputs=[TableWritten("lake://shop/rollup", [("card", "VARCHAR"), ("n", "BIGINT")], 2)],
                       column_lineage={"lake://shop/rollup": {"card": [("lake://shop/clean", "card")], "n": []}})
    checks = [CheckResult("not_null(id)", "not_null", "lake://shop/clean", "error", False, 2,
                          [{"id": None}], "2 rows", ["id"]),
              CheckResult("row_count(min=1)", "row_count", "lake://shop/clean", "warn", True)]
    failed_quality = JobResult(False, "1 check failed", checks=checks, retryable=False)
    profile = JobResult(True, "profiled", inputs=["lake://shop/clean"],
                        profiles={"lake://shop/clean": [{"column": "id", "nulls": 0}, {"column": "card", "nulls": 1}]})
    return [
        JobUpdate("run-2", "clean", {"status": "running", "attempts": 1, "started_at": "t0", "log_path": "c.log",
                                     "message": None}),
        JobUpdate("run-2", "quality", {"status": "running", "attempts": 1, "started_at": "t0", "log_path": "q.log",
                                       "message": "retried after an interruption"}),
        _finish("clean", clean, column_tags={"lake://shop/clean": {"id": ["key"]}}),
        JobUpdate("run-2", "rollup", {"status": "running", "attempts": 2, "started_at": "t1", "log_path": "r.log",
                                      "message": None}),
        _finish("quality", failed_quality),
        _finish("rollup", rollup),
        _finish("profile", profile),
        JobUpdate("run-2", "skipped", {"status": "skipped", "message": "skipped: upstream job 'x' failed"}),
    ]


def _store(path):
    store = StateStore.open(path)
    # a catalog and lineage from before: the depot's `card` is pii, the old run's lineage of `clean` goes
    store.catalog.replace_owner_datasets("depot:raw", [{
        "address": "depot://raw/orders", "kind": "file", "columns": [{"name": "id", "type": "BIGINT", "tags": []},
                                                                      {"name": "CARD", "type": "VARCHAR",
                                                                       "tags": ["pii"]}]}])
    store.runs.start_run("run-1", WF, "c1", "k1", "apply", [("clean", "sql")])
    store.runs.finish_job("run-1", WF, "clean", JobResult(
        True, "old", inputs=["depot://raw/old"], outputs=[TableWritten("lake://shop/clean", [("x", "INT")], 1)],
        column_lineage={"lake://shop/clean": {"x": [("depot://raw/old", "x")]}}), attempts=1, owner=None,
        workspace="shop", tags=[], ended="2025-12-31T00:00:00.000+00:00")
    store.runs.start_run("run-2", WF, "c2", "k2", "apply",
                         [("clean", "sql"), ("quality", "quality"), ("rollup", "sql"), ("profile", "profile"),
                          ("skipped", "sql")])
    return store


def _dump(store):
    conn = store._conn
    return {t: sorted(map(repr, conn.execute(f"SELECT {cols} FROM {t}").fetchall())) for t, cols in TABLES.items()}


@pytest.mark.parametrize("split", [1, 3])
def test_a_batch_leaves_what_one_write_at_a_time_leaves(tmp_path, split):
    one_by_one = _store(tmp_path / "a")
    for item in _items():
        one_by_one.runs.write([item])
    batched = _store(tmp_path / "b")
    items = _items()
    for i in range(0, len(items), len(items) // split + 1):
        batched.runs.write(items[i:i + len(items) // split + 1])
    expected, got = _dump(one_by_one), _dump(batched)
    for table in TABLES:
        assert got[table] == expected[table], table
    # and what that is: the old lineage of `clean` replaced, tags followed the data, the failed
    # quality job's checks kept, the job rows as the last write left them
    jobs = {r[0]: r[1:] for r in batched._conn.execute(
        "SELECT job, status, attempts, message, log_path, started_at FROM jobs WHERE run_id = 'run-2'").fetchall()}
    assert jobs["clean"] == ("succeeded", 1, "1 output(s)", "c.log", "t0")
    assert jobs["quality"] == ("failed", 1, "1 check failed", "q.log", "t0")
    assert jobs["rollup"] == ("succeeded", 1, "1 output(s)", "r.log", "t1")
    assert jobs["skipped"] == ("skipped", 0, "skipped: upstream job 'x' failed", None, None)
    assert batched.runs.column_lineage("lake://shop/clean") == [
        {"target": "lake://shop/clean", "target_column": "card", "source": "depot://raw/orders",
         "source_column": "card", "workflow_id": WF, "job": "clean"},
        {"target": "lake://shop/clean", "target_column": "id", "source": "depot://raw/orders",
         "source_column": "id", "workflow_id": WF, "job": "clean"}]
    tags = {(c["address"], c["name"]): c["tags"] for cols in batched.catalog.all_columns().values() for c in cols}
    assert tags[("lake://shop/clean", "card")] == ["pii"] and tags[("lake://shop/clean", "id")] == ["key"]
    assert tags[("lake://shop/rollup", "card")] == ["pii"] and tags[("lake://shop/rollup", "n")] == []
    assert [q["name"] for q in batched.runs.quality(run_id="run-2")] == ["not_null(id)", "row_count(min=1)"]
    assert [p["column"] for p in batched.runs.profiles("lake://shop/clean")] == ["card", "id"]
    one_by_one.close()
    batched.close()


def test_the_recorder_lingers_for_company_but_a_waiter_cuts_it_short(tmp_path, monkeypatch):
    """Items submitted together go out in one commit; wait() gets them durable at once, even with a
    linger far longer than the test allows (the join below would time out)."""
    import threading

    from reconciler.engine.runner import _Recorder

    store = _store(tmp_path / "s")
    writes: list[int] = []
    real_write = store.runs.write
    monkeypatch.setattr(store.runs, "write",
                        lambda items, findings=True, costs=None: (writes.append(len(items)),
                                                                  real_write(items, findings, costs)))
    monkeypatch.setattr(_Recorder, "LINGER", 3600.0)
    recorder = _Recorder(store)
    items = _items()
    for item in items:
        recorder.submit(item)
    waiter = threading.Thread(target=recorder.wait, daemon=True)
    waiter.start()
    waiter.join(timeout=60)
    assert not waiter.is_alive(), "wait() stayed behind the linger"
    assert writes == [len(items)]  # all of them, in one batch
    recorder.close()  # nothing left: close does not wait out the linger either
    store.runs.finish_run("run-2", "failed", "job 'quality' failed", 18, 10)  # writes out what its jobs found
    expected = _store(tmp_path / "e")
    expected.runs.write(items)
    assert _dump(store) == _dump(expected)
    store.close()
    expected.close()


def test_a_write_accounts_for_its_parts_and_leaves_the_same_tables(tmp_path):
    """The runner's account of its bookkeeping (run.json's `bookkeeping`): each write adds its seconds by part
    and one commit; timing it changes nothing it writes."""
    timed, untimed = _store(tmp_path / "t"), _store(tmp_path / "u")
    costs: dict = {}
    items = _items()
    timed.runs.write(items[:4], findings=False, costs=costs)
    assert set(costs) == {"records", "commits"} and costs["commits"] == 1  # no findings written out yet
    timed.runs.write(items[4:], costs=costs)
    assert costs["commits"] == 2
    assert set(costs) == {"records", "commits", "quality", "lineage", "profiles", "catalog"}
    assert all(costs[k] > 0 for k in ("records", "quality", "lineage", "profiles", "catalog"))
    untimed.runs.write(items[:4], findings=False)
    untimed.runs.write(items[4:])
    got, want = _dump(timed), _dump(untimed)
    for table in TABLES:
        assert got[table] == want[table], table
    timed.close()
    untimed.close()


def test_findings_wait_in_the_job_rows_until_the_run_ends(tmp_path):
    """Batches written without findings leave the catalog and lineage as they were, with each job's status
    durable; the run's end writes them all out: the same tables as writing everything at once."""
    store = _store(tmp_path / "s")
    before = _dump(store)
    items = _items()
    store.runs.write(items[:4], findings=False)
    store.runs.write(items[4:], findings=False)
    now = _dump(store)
    for table in ("lineage_edges", "column_lineage", "quality_results", "column_profiles", "datasets", "columns"):
        assert now[table] == before[table], table
    status = dict(store._conn.execute("SELECT job, status FROM jobs WHERE run_id = 'run-2'").fetchall())
    assert status["clean"] == "succeeded" and status["quality"] == "failed"
    pending = store._conn.execute("SELECT count(*) FROM jobs WHERE findings IS NOT NULL").fetchone()[0]
    assert pending == 4  # clean, rollup, profile succeeded; quality failed with checks
    store.runs.finish_run("run-2", "failed", "job 'quality' failed", 18, 10)
    expected = _store(tmp_path / "e")
    expected.runs.write(items)
    expected.runs.finish_run("run-2", "failed", "job 'quality' failed", 18, 10)
    got, want = _dump(store), _dump(expected)
    for table in TABLES:
        assert got[table] == want[table], table
    assert store._conn.execute("SELECT count(*) FROM jobs WHERE findings IS NOT NULL").fetchone()[0] == 0
    store.close()
    expected.close()


def test_an_abandoned_runs_findings_are_written_out(tmp_path):
    """A crash left a run `running` with findings not yet written out; the workflow changed, so the run
    is abandoned, not resumed: the tables its finished jobs wrote still reach the catalog."""
    store = _store(tmp_path / "s")
    store.runs.write(_items()[:3], findings=False)  # `clean` finished, then the crash
    def clean_columns():
        return {c["name"] for c in store.catalog.all_columns()["lake://shop/clean"]}

    assert clean_columns() == {"x"}  # what the old run's job wrote
    store.runs.abandon_running(WF, "superseded")
    assert clean_columns() == {"id", "card"}
    assert [r["status"] for r in store.runs.runs(WF) if r["run_id"] == "run-2"] == ["cancelled"]
    store.close()


def test_migration_4_keeps_a_version_3_states_jobs(tmp_path):
    """A state written before findings waited in the job rows: its jobs stay, with nothing pending."""
    import duckdb

    from reconciler.store.schema import MIGRATIONS, migrate, schema_version

    conn = duckdb.connect(str(tmp_path / "old.duckdb"))
    migrate(conn, "old", MIGRATIONS[:3])
    conn.execute("INSERT INTO jobs (run_id, job, status) VALUES ('r', 'j', 'succeeded')")
    assert migrate(conn, "old") == 3 and schema_version(conn) == 4
    assert conn.execute("SELECT job, status, findings FROM jobs").fetchall() == [("j", "succeeded", None)]
    conn.execute(MIGRATIONS[3])  # safe to replay
    conn.close()


def test_lake_bound_jobs_start_no_more_than_the_cpus_others_fill_the_parallelism():
    """DuckDB runs each query on every CPU: lake-bound jobs beyond the CPUs wait, a shell or python job
    (a subprocess) still starts; the order of the ready jobs is kept."""
    from reconciler.engine.runner import to_start

    bound = {"a": True, "b": True, "c": True, "sh": False, "py": False}
    assert to_start(["a", "b", "c", "sh", "py"], [], bound, parallelism=4, lake_slots=2) == ["a", "b", "sh", "py"]
    assert to_start(["c", "sh"], ["a", "b"], bound, parallelism=4, lake_slots=2) == ["sh"]
    assert to_start(["c", "sh", "py"], ["a"], bound, parallelism=3, lake_slots=2) == ["c", "sh"]
    assert to_start(["a", "b", "c"], [], bound, parallelism=4, lake_slots=8) == ["a", "b", "c"]
    assert to_start(["a"], [], {}, parallelism=1, lake_slots=1) == ["a"]  # unknown: not lake-bound
