"""The state store, its lock and the catalog, on real DuckDB files."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import duckdb
import pytest

from reconciler.core.diagnostics import UserError
from reconciler.core.ids import make_id
from reconciler.core.record import APPLYING, BLOCKED, DELETING, FAILED, READY
from reconciler.core.resource import Resource
from reconciler.store.lock import StateLock
from reconciler.store.schema import MIGRATIONS, SCHEMA_VERSION, migrate, schema_version
from reconciler.store.state import STATE_FILE, Finish, StateStore

ROOT = Path(__file__).resolve().parents[2]


def depot(name: str, path: str = "data/x", **extra) -> Resource:
    spec = {"version": "v1", "type": "depot", "name": name, "depot": {"kind": "file", "path": path}}
    return Resource(make_id("depot", name), "depot", name, None, spec, f"{name}.yaml", 0, 1, **extra)


def run_child(code: str, *args: str) -> subprocess.Popen:
    """A Python child that prints one line when it reached the point under test, then waits."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.PIPE, text=True)


def wait_ready(child: subprocess.Popen) -> str:
    line = child.stdout.readline()
    assert line, child.stderr.read()
    return line.strip()


def kill9(child: subprocess.Popen) -> None:
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    child.stdout.close()
    child.stderr.close()
    child.stdin.close()


@pytest.fixture
def state_dir(tmp_path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def store(state_dir):
    with StateStore.open(state_dir) as s:
        yield s


# ---- opening and migrations ------------------------------------------------------------------


def test_open_creates_the_file_and_migrates_from_empty(state_dir):
    with StateStore.open(state_dir) as s:
        assert (state_dir / STATE_FILE).is_file()
        assert s.schema_version == SCHEMA_VERSION
        assert s.serial == 0
        assert s.records() == {}
        tables = {r[0] for r in s._conn.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"meta", "resources", "resource_history", "datasets", "columns", "dataproducts"} <= tables


def test_migrations_run_again_change_nothing(state_dir, store):
    store.finish("depot:a", READY, "ok", resource=depot("a"), commit="c1")
    store.close()
    conn = duckdb.connect(str(state_dir / STATE_FILE))
    assert migrate(conn, "test") == SCHEMA_VERSION  # already current: nothing to do
    conn.execute(MIGRATIONS[0])  # the scripts themselves are safe to replay
    assert schema_version(conn) == SCHEMA_VERSION
    conn.close()
    with StateStore.open(state_dir) as s:
        assert s.get("depot:a").phase == READY
        assert s.serial == 1


def test_a_failing_migration_leaves_the_previous_version(tmp_path):
    conn = duckdb.connect(str(tmp_path / "m.duckdb"))
    broken = MIGRATIONS + ["CREATE TABLE half_done (x INTEGER); SELECT error('boom');"]
    with pytest.raises(duckdb.Error, match="boom"):
        migrate(conn, "test", broken)
    assert schema_version(conn) == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'half_done'"
                        ).fetchone()[0] == 0
    conn.close()


def test_state_from_a_newer_reconciler_is_refused(state_dir):
    StateStore.open(state_dir).close()
    conn = duckdb.connect(str(state_dir / STATE_FILE))
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    for read_only in (False, True):
        with pytest.raises(UserError, match="state was written by a newer reconciler"):
            StateStore.open(state_dir, read_only=read_only)


def test_read_only_open_of_a_missing_state_creates_nothing(state_dir):
    with StateStore.open(state_dir, read_only=True) as s:
        assert s.records() == {}
        assert s.get("depot:a") is None
        assert s.serial == 0
        assert s.catalog.datasets() == []
        with pytest.raises(RuntimeError, match="read-only"):
            s.finish("depot:a", READY, "ok", resource=depot("a"))
    assert not state_dir.exists()


def test_read_only_open_of_an_old_file_migrates_in_memory_only(state_dir):
    state_dir.mkdir()
    duckdb.connect(str(state_dir / STATE_FILE)).close()  # a file at schema version 0
    with StateStore.open(state_dir, read_only=True) as s:
        assert s.records() == {}
        assert s.schema_version == SCHEMA_VERSION
    conn = duckdb.connect(str(state_dir / STATE_FILE), read_only=True)
    assert schema_version(conn) == 0
    conn.close()


def test_read_only_open_sees_what_was_written(state_dir, store):
    store.finish("depot:a", READY, "ok", resource=depot("a"), commit="c1")
    store.close()
    with StateStore.open(state_dir, read_only=True) as s:
        assert s.get("depot:a").commit == "c1"
        assert s.serial == 1


def test_a_file_that_is_not_a_state_database_is_a_user_error(state_dir):
    state_dir.mkdir()
    (state_dir / STATE_FILE).write_bytes(b"not duckdb" * 1000)
    for read_only in (False, True):
        with pytest.raises(UserError, match="cannot open the state database .*not a valid DuckDB database"):
            StateStore.open(state_dir, read_only=read_only)


def test_read_only_open_beside_a_writable_one_in_this_process(state_dir, store):
    store.finish("depot:a", READY, "ok", resource=depot("a"))
    with StateStore.open(state_dir, read_only=True) as reader:
        assert reader.get("depot:a").phase == READY
        with pytest.raises(RuntimeError, match="read-only"):
            reader.remove("depot:a")
    assert store.serial == 1  # the writer's connection survived the reader's close


def test_state_open_in_another_process_is_refused_with_its_pid(state_dir):
    StateStore.open(state_dir).close()
    child = run_child("""
        import sys
        from pathlib import Path
        from reconciler.store.state import StateStore
        s = StateStore.open(Path(sys.argv[1]))
        print("open", flush=True)
        sys.stdin.read()
    """, str(state_dir))
    try:
        wait_ready(child)
        for read_only in (False, True):
            with pytest.raises(UserError, match=rf"in use by another process \(pid {child.pid}\)"):
                StateStore.open(state_dir, read_only=read_only)
    finally:
        kill9(child)
    StateStore.open(state_dir).close()


# ---- writes ----------------------------------------------------------------------------------


def test_serial_moves_by_one_on_every_write(store):
    a, b = depot("a"), depot("b")
    serials = [store.serial]
    store.begin(a, "c1", "create")
    serials.append(store.serial)
    store.finish(a.id, READY, "ok", resource=a, commit="c1")
    serials.append(store.serial)
    store.mark(b, BLOCKED, "depends on depot:a, which failed")
    serials.append(store.serial)
    store.bulk_finish([Finish(a.id, READY, "ok", a, "c2"), Finish(b.id, READY, "ok", b, "c2")])
    serials.append(store.serial)
    store.remove(b.id)
    serials.append(store.serial)
    assert serials == [0, 1, 2, 3, 4, 5]
    store.catalog.upsert_dataproduct("p", domain="d", owner="o", spec={})  # the catalog is not resource state
    assert store.serial == 5


def test_begin_then_ready_records_the_applied_spec(store):
    a = depot("a", depends_on={"workspace:w"})
    store.begin(a, "c1", "create")
    rec = store.get(a.id)
    assert (rec.phase, rec.spec, rec.hash, rec.target_hash, rec.file) == (APPLYING, None, None, a.hash, "a.yaml")
    store.finish(a.id, READY, "reachable", resource=a, commit="c1", outputs={"datasets": 2})
    rec = store.get(a.id)
    assert rec.phase == READY and rec.message == "reachable"
    assert rec.spec == a.spec and rec.hash == a.hash and rec.commit == "c1"
    assert rec.depends_on == ["workspace:w"] and rec.prune is True and rec.outputs == {"datasets": 2}
    assert rec.applied_at and rec.created_at <= rec.updated_at


def test_a_failed_update_keeps_the_old_applied_spec(store):
    v1, v2 = depot("a", "data/v1"), depot("a", "data/v2", prune=False)
    store.finish(v1.id, READY, "ok", resource=v1, commit="c1")
    store.begin(v2, "c2", "update")
    store.finish(v2.id, FAILED, "folder data/v2 does not exist", resource=v2, commit="c2")
    rec = store.get(v1.id)
    assert rec.phase == FAILED and rec.message == "folder data/v2 does not exist"
    assert (rec.spec, rec.hash, rec.commit, rec.prune) == (v1.spec, v1.hash, "c1", True)
    assert rec.target_hash == v2.hash


def test_begin_without_finish_survives_a_reopen(state_dir, store):
    v1, v2 = depot("a", "data/v1"), depot("a", "data/v2")
    store.finish(v1.id, READY, "ok", resource=v1, commit="c1")
    store.begin(v2, "c2", "update")
    store.close()
    with StateStore.open(state_dir) as s:
        rec = s.get(v1.id)
    assert (rec.phase, rec.spec, rec.hash, rec.target_hash, rec.commit) == (APPLYING, v1.spec, v1.hash, v2.hash, "c1")


def test_begin_survives_kill_9(state_dir, store):
    v1 = depot("a", "data/v1")
    store.finish(v1.id, READY, "ok", resource=v1, commit="c1")
    store.close()
    child = run_child("""
        import sys
        from pathlib import Path
        from reconciler.core.resource import Resource
        from reconciler.store.state import StateStore
        s = StateStore.open(Path(sys.argv[1]))
        spec = {"version": "v1", "type": "depot", "name": "a", "depot": {"kind": "file", "path": "data/v2"}}
        s.begin(Resource("depot:a", "depot", "a", None, spec, "a.yaml", 0, 1), "c2", "update")
        print("begun", flush=True)
        sys.stdin.read()
    """, str(state_dir))
    wait_ready(child)
    kill9(child)
    with StateStore.open(state_dir) as s:
        rec = s.get("depot:a")
        assert (rec.phase, rec.spec, rec.commit) == (APPLYING, v1.spec, "c1")
        assert rec.target_hash == depot("a", "data/v2").hash
        assert s.serial == 2


def test_delete_begins_from_a_record_and_remove_forgets_it(store):
    a = depot("a")
    store.finish(a.id, READY, "ok", resource=a, commit="c1")
    store.begin(store.get(a.id), "c2", "delete")
    assert store.get(a.id).phase == DELETING
    store.remove(a.id)
    assert store.get(a.id) is None
    assert [h["action"] for h in store.history(a.id)] == ["finish", "delete", "remove"]


def test_mark_leaves_the_applied_spec_alone(store):
    a, b = depot("a"), depot("b")
    store.finish(a.id, READY, "ok", resource=a, commit="c1")
    store.mark(a, BLOCKED, "depends on workspace:w, which failed")
    store.mark(b, BLOCKED, "depends on workspace:w, which failed")
    ra, rb = store.get(a.id), store.get(b.id)
    assert (ra.phase, ra.spec, ra.commit) == (BLOCKED, a.spec, "c1")
    assert (rb.phase, rb.spec, rb.hash, rb.file) == (BLOCKED, None, None, "b.yaml")


def test_history_has_one_row_per_write_in_order(store):
    a = depot("a")
    store.begin(a, "c1", "create")
    store.finish(a.id, FAILED, "no", resource=a, commit="c1")
    store.begin(a, "c2", "create")
    store.finish(a.id, READY, "yes", resource=a, commit="c2")
    rows = store.history(a.id)
    assert [(h["serial"], h["action"], h["phase"], h["commit"]) for h in rows] == [
        (1, "create", APPLYING, "c1"), (2, "finish", FAILED, "c1"), (3, "create", APPLYING, "c2"),
        (4, "finish", READY, "c2")]
    assert all(h["hash"] == a.hash for h in rows)


def test_secret_records_keep_only_the_fingerprint(state_dir, store):
    spec = {"version": "v1", "type": "secret", "name": "pg", "workspace": "public",
            "secret": {"from": {"env": "PG_PASSWORD"}}}
    s = Resource("secret:public/pg", "secret", "pg", "public", spec, "s.yaml", 0, 1)
    store.finish(s.id, READY, "ok", resource=s, outputs={"fingerprint": "0123456789abcdef", "value": "hunter2-x"})
    assert store.get(s.id).outputs == {"fingerprint": "0123456789abcdef"}
    store.close()
    assert b"hunter2-x" not in (state_dir / STATE_FILE).read_bytes()


def test_bulk_10k_records_write_and_read_back(store, capsys):
    resources = [depot(f"d{i:05d}", f"data/{i}") for i in range(10_000)]
    start = time.perf_counter()
    store.bulk_finish([Finish(r.id, READY, "ok", r, "c1", {"datasets": 1}) for r in resources])
    written = time.perf_counter() - start
    start = time.perf_counter()
    records = store.records()
    read = time.perf_counter() - start
    with capsys.disabled():
        print(f"\n10k records: bulk_finish {written * 1000:.0f} ms, records() {read * 1000:.0f} ms")
    assert len(records) == 10_000 and store.serial == 1
    assert records["depot:d04242"].spec["depot"]["path"] == "data/4242"
    assert records["depot:d04242"].hash == resources[4242].hash
    # a second pass over existing rows (the upsert path): half fail and keep their spec
    store.bulk_finish([Finish(r.id, FAILED if i % 2 else READY, "again", r, "c2") for i, r in enumerate(resources)])
    records = store.records()
    assert records["depot:d00001"].phase == FAILED and records["depot:d00001"].commit == "c1"
    assert records["depot:d00002"].phase == READY and records["depot:d00002"].commit == "c2"
    # row by row would take 10 s or more; this bound only catches that regression
    assert written < 5 and read < 5


def test_writes_from_many_threads(store):
    resources = [depot(f"t{i}") for i in range(40)]

    def apply(r: Resource) -> None:
        store.begin(r, "c1", "create")
        store.get(r.id)
        store.finish(r.id, READY, "ok", resource=r, commit="c1")

    threads = [threading.Thread(target=apply, args=(r,)) for r in resources]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert store.serial == 80
    assert {r.phase for r in store.records().values()} == {READY}


# ---- lock ------------------------------------------------------------------------------------


def test_lock_refuses_a_second_holder_and_says_who(state_dir):
    with StateLock(state_dir, "apply"):
        info = (state_dir / "lock.info").read_text()
        assert f'"pid": {os.getpid()}' in info and '"purpose": "apply"' in info
        with pytest.raises(UserError, match=rf"locked by apply \(pid {os.getpid()}, since .*\); wait for it"):
            StateLock(state_dir, "plan").acquire()
    assert not (state_dir / "lock.info").exists()
    with StateLock(state_dir, "apply again"):
        pass


def test_lock_held_by_a_process_is_released_when_it_is_killed(state_dir):
    child = run_child("""
        import sys
        from pathlib import Path
        from reconciler.store.lock import StateLock
        lock = StateLock(Path(sys.argv[1]), "daemon reconcile").acquire()
        print("locked", flush=True)
        sys.stdin.read()
    """, str(state_dir))
    try:
        wait_ready(child)
        with pytest.raises(UserError) as err:
            StateLock(state_dir, "apply").acquire()
        assert f"the state in {state_dir} is locked by daemon reconcile (pid {child.pid}, since " in err.value.message
    finally:
        kill9(child)
    with StateLock(state_dir, "apply") as lock:  # the kernel dropped the dead holder's lock
        assert lock.held


# ---- catalog ---------------------------------------------------------------------------------


def dataset(address: str, *columns: str, **extra) -> dict:
    return {"address": address, "format": "csv", "row_count": 3,
            "columns": [{"name": c, "type": "VARCHAR", "tags": ["pii"] if c == "card" else []} for c in columns],
            **extra}


def test_replace_owner_datasets_replaces_exactly_what_the_owner_had(store):
    cat = store.catalog
    cat.replace_owner_datasets("depot:raw", [dataset("depot://raw/a", "id", "card"), dataset("depot://raw/b", "x")])
    cat.replace_owner_datasets("workflow:w/daily", [dataset("lake://w/t", "id", workspace="w", kind="lake")])
    assert [d["address"] for d in cat.datasets()] == ["depot://raw/a", "depot://raw/b", "lake://w/t"]
    assert [c["name"] for c in cat.columns("depot://raw/a")] == ["id", "card"]
    assert cat.columns("depot://raw/a")[1]["tags"] == ["pii"]
    assert cat.dataset("depot://raw/a")["kind"] == "depot"

    cat.replace_owner_datasets("depot:raw", [dataset("depot://raw/a", "id")])
    assert [d["address"] for d in cat.datasets()] == ["depot://raw/a", "lake://w/t"]
    assert cat.columns("depot://raw/b") == [] and [c["name"] for c in cat.columns("depot://raw/a")] == ["id"]
    assert [d["address"] for d in cat.datasets(workspace="w")] == ["lake://w/t"]

    cat.drop_owner("depot:raw")
    assert [d["address"] for d in cat.datasets()] == ["lake://w/t"]
    assert cat.columns("depot://raw/a") == []


def test_columns_of_many_datasets_in_one_query_agree_with_one_at_a_time(store):
    cat = store.catalog
    cat.replace_owner_datasets("depot:raw", [dataset("depot://raw/a", "id", "card", "amount"),
                                             dataset("depot://raw/b", "x"), dataset("depot://raw/c")])
    cat.replace_owner_datasets("workflow:w/daily", [dataset("lake://w/t", "z", "y", workspace="w", kind="lake")])
    wanted = ["lake://w/t", "depot://raw/a", "depot://raw/c", "depot://raw/missing", "depot://raw/a"]
    got = cat.columns_of(iter(wanted))
    assert got == {a: cat.columns(a) for a in ("depot://raw/a", "lake://w/t")}  # none for no columns
    assert [c["name"] for c in got["lake://w/t"]] == ["z", "y"]  # in their order, not by name
    assert got["depot://raw/a"][1]["tags"] == ["pii"]
    assert cat.columns_of([]) == {} and cat.columns_of(["depot://raw/missing"]) == {}


def test_an_address_moves_to_its_new_owner(store):
    cat = store.catalog
    cat.replace_owner_datasets("workflow:w/one", [dataset("lake://w/t", "a")])
    cat.replace_owner_datasets("workflow:w/two", [dataset("lake://w/t", "b")])
    assert cat.dataset("lake://w/t")["owner_resource"] == "workflow:w/two"
    assert [c["name"] for c in cat.columns("lake://w/t")] == ["b"]
    cat.upsert_datasets("workflow:w/two", [dataset("lake://w/u", "c")])
    assert len(cat.datasets(owner="workflow:w/two")) == 2


def test_dataproducts_upsert_and_drop(store):
    cat = store.catalog
    cat.upsert_dataproduct("tx", domain="payments", owner="team", spec={"inputs": [1]})
    cat.upsert_dataproduct("tx", domain="payments", owner="team-2", spec={"inputs": [2]})
    [product] = cat.dataproducts()
    assert (product["name"], product["owner"], product["spec"]) == ("tx", "team-2", {"inputs": [2]})
    cat.drop_dataproduct("tx")
    assert cat.dataproducts() == []


def test_live_records_read_only_what_changed_and_agree_with_a_full_read(store):
    from reconciler.store.state import LiveRecords

    live = LiveRecords()
    a, b, c = depot("a"), depot("b"), depot("c")
    store.bulk_begin([(a, "c1", "apply"), (b, "c1", "apply")])
    store.bulk_finish([Finish(a.id, READY, "ok", a, "c1"), Finish(b.id, READY, "ok", b, "c1")])
    first, serial = live.read(store)
    assert first == store.records() and serial == store.serial
    reads = []
    store._conn = _Counting(store._conn, reads)
    assert live.read(store)[0] == first and not [q for q in reads if "FROM resources" in q]  # unchanged: no read

    b2 = depot("b", path="data/y")
    store.begin(b2, "c2", "apply")
    store.finish(b2.id, FAILED, "boom", resource=b2, commit="c2")
    store.mark(c, BLOCKED, "waits for b")
    store.remove(a.id)
    reads.clear()
    got, serial = live.read(store)
    queries = list(reads)
    assert [q for q in queries if "WHERE id IN" in q]  # a partial read, not a full one
    assert not [q for q in queries if "FROM resources ORDER BY id" in q]
    assert got == store.records() and serial == store.serial
    assert list(got) == sorted(got) and got[b.id].phase == FAILED and a.id not in got and got[c.id].phase == BLOCKED



def test_live_records_tell_which_ids_were_written_since_a_serial(store):
    from reconciler.store.state import LiveRecords

    live = LiveRecords()
    a, b, c = depot("a"), depot("b"), depot("c")
    assert live.changed_since(0) is None  # nothing read yet
    store.bulk_finish([Finish(a.id, READY, "ok", a, "c1"), Finish(b.id, READY, "ok", b, "c1")])
    _, s1 = live.read(store)
    assert live.changed_since(s1) == set()
    store.finish(b.id, FAILED, "boom", resource=b, commit="c2")
    _, s2 = live.read(store)
    store.mark(c, BLOCKED, "waits")
    store.remove(a.id)
    _, s3 = live.read(store)
    assert live.changed_since(s1) == {b.id, c.id, a.id}
    assert live.changed_since(s2) == {c.id, a.id}
    assert live.changed_since(s3) == set()
    assert live.changed_since(s1 - 1) is None  # before the full read: unknown
    assert live.changed_since(s3 + 1) is None  # a serial this reader has not seen
    LiveRecords.LOG, saved = 1, LiveRecords.LOG
    try:  # what falls out of the log is unknown, never reported as unchanged
        store.finish(c.id, READY, "ok", resource=c, commit="c3")
        live.read(store)
        assert live.changed_since(s1) is None and live.changed_since(s3) == {c.id}
    finally:
        LiveRecords.LOG = saved


class _Counting:
    """A DuckDB connection that notes the SQL it runs."""

    def __init__(self, conn, seen):
        self._conn, self._seen = conn, seen

    def execute(self, sql, *args):
        self._seen.append(sql)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name):
        return getattr(self._conn, name)
