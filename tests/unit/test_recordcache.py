"""Remembered records: the same records as a read of the state, for as long as the state file is unchanged."""
from dataclasses import fields

from reconciler.core.record import FAILED, READY, Record
from reconciler.store import recordcache
from reconciler.store.doccache import DocCache
from reconciler.store.state import StateStore
from tests.unit.test_store import depot


FIELDS = [f.name for f in fields(Record)]


def write(state_dir, *items):
    with StateStore.open(state_dir) as store:
        for res, phase in items:
            store.begin(res, "c1", "apply")
            store.finish(res.id, phase, "done", resource=res, commit="c1", outputs={"datasets": 1})
        return store.records(), store.serial


def test_remembered_records_equal_a_read_until_the_state_changes(tmp_path):
    state = tmp_path / "state"
    a, b = depot("a"), depot("b", depends_on={"depot:a"})
    records, serial = write(state, (a, READY), (b, FAILED))
    cache = DocCache(state)
    assert recordcache.remember(cache, state, records, serial)

    got, got_serial = recordcache.remembered(DocCache(state), state)
    assert got_serial == serial and set(got) == set(records)
    for rid, rec in records.items():
        assert got.hash_and_phase(rid) == (rec.hash, rec.phase)
        # every field, the spec read from the state database on first use
        assert {f: getattr(got[rid], f) for f in FIELDS} == {f: getattr(rec, f) for f in FIELDS}
    assert got.get("depot:nope") is None and "depot:a" in got and len(got) == 2

    write(state, (depot("c"), READY))  # any write changes the state file: what was remembered is stale
    assert recordcache.remembered(DocCache(state), state) is None


def test_records_from_a_daemon_api_are_not_remembered(tmp_path):
    cache = DocCache(tmp_path)
    assert not recordcache.remember(cache, tmp_path, {}, 0)
    assert recordcache.remembered(cache, tmp_path) is None
