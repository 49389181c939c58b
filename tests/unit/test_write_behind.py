"""The apply engine's batched state writes: a flush returns only once what was queued before it is written."""
from __future__ import annotations

import threading

from reconciler.core.record import APPLYING, READY
from reconciler.engine.applier import WriteBehind
from reconciler.store.state import StateStore
from tests.unit.test_store import depot


class GatedStore(StateStore):
    """The real store, with a gate that holds the first begin write half-way (as a slow disk would)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.entered = threading.Event()
        self.release = threading.Event()

    def bulk_begin(self, items):
        if not self.entered.is_set():
            self.entered.set()
            self.release.wait(10)
        super().bulk_begin(items)


def open_gated(tmp_path) -> GatedStore:
    plain = StateStore.open(tmp_path)  # creates and migrates the file
    conn = plain._conn
    return GatedStore(conn, tmp_path, False)


def test_a_flush_waits_for_the_flush_that_took_its_queue(tmp_path):
    store = open_gated(tmp_path)
    writes = WriteBehind(store)
    raw = depot("raw")
    writes.begin(raw, "c1", "create")
    first = threading.Thread(target=writes.flush)  # the scheduling thread's periodic flush
    first.start()
    assert store.entered.wait(10)
    seen = {}

    def crash_point_flush():  # a worker's flush, e.g. just before a crash or a record's removal
        writes.flush()
        rec = store.get(raw.id)
        seen["phase"] = rec.phase if rec else None

    second = threading.Thread(target=crash_point_flush)
    second.start()
    second.join(0.3)  # without serialised flushes it has returned by now, before the begin is written
    store.release.set()
    first.join(10)
    second.join(10)
    assert seen["phase"] == APPLYING


def test_a_finish_queued_after_a_begin_is_never_overwritten_by_it(tmp_path):
    store = open_gated(tmp_path)
    writes = WriteBehind(store)
    raw = depot("raw")
    writes.begin(raw, "c1", "create")
    first = threading.Thread(target=writes.flush)
    first.start()
    assert store.entered.wait(10)
    writes.finish(raw.id, READY, "created", resource=raw, commit="c1")
    second = threading.Thread(target=writes.flush)
    second.start()
    second.join(0.3)
    store.release.set()
    first.join(10)
    second.join(10)
    assert store.get(raw.id).phase == READY
