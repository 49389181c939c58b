"""The recorded resources, remembered in the document cache for as long as the state file is unchanged.

A fresh `plan` process compares 10,000 desired hashes with the recorded ones; reading them from
DuckDB costs ~0.3 s (importing and opening it included). While the state database and its WAL keep
their size and modification time (every write changes one: the plan memo relies on the same stamp),
the last records read are still the records, so they are kept here without their specs, which are
read from the state database one by one when a plan looks at them (a changed resource's diff).
"""
from __future__ import annotations

import marshal
from collections.abc import Mapping
import threading
from pathlib import Path

from reconciler.core.record import Record
from reconciler.store.planmemo import state_fingerprint

KEY = "records"
VERSION = 1
_FIELDS = ("id", "type", "name", "workspace", "hash", "phase", "message", "commit", "file", "depends_on", "prune",
           "bundle", "outputs", "created_at", "updated_at", "applied_at", "target_hash")


class LazyRecord(Record):
    """A Record whose spec is fetched on first use by `_load(id)` (the state database, a resource...)."""

    @classmethod
    def of(cls, load, **fields) -> "LazyRecord":
        r = object.__new__(cls)
        r.__dict__.update(fields, _load=load)
        return r

    @property
    def spec(self) -> dict | None:
        d = self.__dict__
        if "_spec" not in d:
            d["_spec"] = d["_load"](d["id"])
        return d["_spec"]

    @spec.setter
    def spec(self, value: dict | None) -> None:
        self.__dict__["_spec"] = value

    @property
    def spec_known(self) -> bool:
        """Whether the spec is at hand already (read, or set) rather than still to be fetched."""
        return "_spec" in self.__dict__

    def __getstate__(self):  # pickled with its spec, never with the loader
        state = dict(self.__dict__, _spec=self.spec)
        state.pop("_load", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)


class _Specs:
    """Applied specs read from the state database on demand: the first alone (a one-file plan diffs one
    resource), then all at once (an access diff reads every policy). The connection is closed after each
    read: a long-lived process (the daemon plans previews through here) must not keep the file open."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self._lock = threading.Lock()
        self._all: dict[str, dict | None] | None = None
        self._reads = 0

    def spec_of(self, rid: str) -> dict | None:
        from reconciler.store.state import StateStore

        with self._lock:
            if self._all is None:
                with StateStore.open(self.state_dir, read_only=True) as store:
                    if self._reads == 0:
                        self._reads += 1
                        record = store.get(rid)
                        return record.spec if record is not None else None
                    self._all = {k: r.spec for k, r in store.records().items()}
            return self._all.get(rid)


def remembered(cache, state_dir: Path) -> tuple[dict[str, Record], int] | None:
    """(records, serial) when the records last remembered for `state_dir` are still current."""
    raw = cache.get_snapshot(KEY)
    if raw is None:
        return None
    try:
        version, stamp, serial, rows = marshal.loads(raw)
    except (ValueError, EOFError, TypeError):
        return None
    if version != VERSION or stamp != _stamp(state_dir):
        return None
    return RememberedRecords(rows, _Specs(Path(state_dir))), serial


class RememberedRecords(Mapping):
    """{id: Record} over the remembered rows; a Record is built when it is asked for. `hash_and_phase` answers
    the planner's question (is this resource in sync?) without building one: a one-file plan of 10,000
    resources builds a handful."""

    def __init__(self, rows: tuple, specs: "_Specs"):
        self._rows = {row[0]: row for row in rows}
        self._built: dict[str, Record] = {}
        self._specs = specs

    def hash_and_phase(self, rid: str) -> tuple | None:
        row = self._rows.get(rid)
        return (row[4], row[5]) if row is not None else None

    def file_of(self, rid: str) -> str | None:
        return self._rows[rid][8]

    def type_of(self, rid: str) -> str:
        return self._rows[rid][1]

    def __getitem__(self, rid: str) -> Record:
        r = self._built.get(rid)
        if r is None:
            row = self._rows[rid]
            r = object.__new__(LazyRecord)
            d = r.__dict__
            d.update(zip(_FIELDS, row))
            d["depends_on"] = list(row[9])
            d["_load"] = self._specs.spec_of
            self._built[rid] = r
        return r

    def __contains__(self, rid) -> bool:
        return rid in self._rows

    def __iter__(self):
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def keys(self):
        return self._rows.keys()


def remember(cache, state_dir: Path, records: dict[str, Record], serial: int) -> bool:
    """Keep `records` (read at `serial` from an unchanged state file) for the next process."""
    if not serial:
        return False  # records from a daemon's API, not from the file
    stamp = _stamp(state_dir)
    rows = tuple((r.id, r.type, r.name, r.workspace, r.hash, r.phase, r.message, r.commit, r.file,
                  tuple(r.depends_on), r.prune, r.bundle, r.outputs or {}, r.created_at, r.updated_at, r.applied_at,
                  r.target_hash) for r in records.values())
    try:
        data = marshal.dumps((VERSION, stamp, serial, rows))
    except ValueError:  # an output that is not plain data: not worth remembering
        return False
    return cache.put_snapshot(KEY, data)


def _stamp(state_dir: Path) -> tuple:
    return (str(Path(state_dir).resolve()), state_fingerprint(Path(state_dir)))
