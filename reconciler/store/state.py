"""What the reconciler remembers: one record per resource, in STATE_DIR/state.duckdb.

Writes follow the crash rule of SPEC.md section 3: `begin` marks a resource
Applying (or Deleting) with the hash it is about to apply while keeping the
spec that was applied last, and only `finish(Ready)` replaces that spec. A
kill -9 between the two leaves the old applied spec and the attempted hash on
record, from which the next run converges.

Every write is one transaction that also appends to `resource_history` and
moves `serial` by one, so a saved plan can tell whether the state it was made
from has changed since. Many rows are written column-wise through `unnest` of
Python lists: one statement for any number of rows, never row by row.

One DuckDB connection, guarded by a lock: the engine applies resources from
several threads and a DuckDB connection is not safe to share without one.
"""
from __future__ import annotations

import json
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import duckdb

from reconciler.core.diagnostics import UserError
from reconciler.core.ids import split_id
from reconciler.core.record import APPLYING, DELETING, READY, Record
from reconciler.core.resource import Resource
from reconciler.core.loader import gc_paused
from reconciler.store.catalog import Catalog
from reconciler.store.dbfile import ensure_created
from reconciler.store.products import Products
from reconciler.store.runs import Runs
from reconciler.store.schema import SCHEMA_VERSION, check_not_newer, migrate, schema_version

STATE_FILE = "state.duckdb"

# (column, DuckDB list type used to pass it) in table order
_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "VARCHAR"), ("type", "VARCHAR"), ("name", "VARCHAR"), ("workspace", "VARCHAR"),
    ("spec", "VARCHAR"), ("hash", "VARCHAR"), ("target_hash", "VARCHAR"), ("phase", "VARCHAR"),
    ("message", "VARCHAR"), ("commit", "VARCHAR"), ("file", "VARCHAR"), ("depends_on", "VARCHAR"),
    ("prune", "BOOLEAN"), ("bundle", "VARCHAR"), ("outputs", "VARCHAR"), ("created_at", "VARCHAR"),
    ("updated_at", "VARCHAR"), ("applied_at", "VARCHAR"),
)
_NAMES = [c for c, _ in _COLUMNS]
_SELECT = ", ".join(f'"{c}"' for c in _NAMES)

# What an upsert changes on an existing row; everything else is kept.
_SET_BEGIN = ("target_hash", "phase", "message", "file", "updated_at")
_SET_MARK = ("phase", "message", "file", "updated_at")
# finish: a row carrying applied_at replaces the applied spec; other rows keep it
_FINISH_SET = ", ".join(
    ["phase = excluded.phase", "message = excluded.message", "updated_at = excluded.updated_at",
     "target_hash = coalesce(excluded.target_hash, resources.target_hash)",
     "file = coalesce(excluded.file, resources.file)",
     "outputs = coalesce(excluded.outputs, resources.outputs)"]
    + [f'"{c}" = CASE WHEN excluded.applied_at IS NOT NULL THEN excluded."{c}" ELSE resources."{c}" END'
       for c in ("spec", "hash", "commit", "depends_on", "prune", "bundle", "applied_at")]
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _dumps(value) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _safe_outputs(type_: str, outputs: dict | None) -> dict | None:
    # a secret's record may only ever carry its fingerprint, whatever a provider returned
    if outputs is None or type_ != "secret":
        return outputs
    return {k: v for k, v in outputs.items() if k == "fingerprint"}


@dataclass
class Finish:
    """One resource's result, for `bulk_finish`."""

    resource_id: str
    phase: str
    message: str = ""
    resource: Resource | None = None
    commit: str | None = None
    outputs: dict | None = None


class StateStore:
    def __init__(self, conn: duckdb.DuckDBPyConnection, state_dir: Path, read_only: bool):
        self._conn = conn
        self._lock = threading.RLock()
        self._batching = False  # inside batch(): writes join its transaction
        self.state_dir = state_dir
        self.read_only = read_only
        self.catalog = Catalog(self)
        self.runs = Runs(self)
        self.products = Products(self)

    # ---- opening -------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, read_only: bool = False) -> "StateStore":
        state_dir = Path(state_dir)
        path = state_dir / STATE_FILE
        if read_only:
            return cls(_open_read_only(path), state_dir, True)
        state_dir.mkdir(parents=True, exist_ok=True)
        conn = _connect(path, read_only=False)
        try:
            migrate(conn, str(path))
        except BaseException:
            conn.close()
            raise
        return cls(conn, state_dir, False)

    def defer_checkpoint(self) -> None:
        """Leave the WAL unmerged when this connection closes (a daemon cycle closes its connection after
        every reconcile; merging then was ~0.1 s of a push's report). `checkpoint()` merges it later."""
        with self._lock:
            self._conn.execute("PRAGMA disable_checkpoint_on_shutdown")

    def checkpoint(self) -> None:
        with self._lock:
            self._conn.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "StateStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reads ---------------------------------------------------------------------------

    @property
    def serial(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT value FROM meta WHERE key = 'serial'").fetchone()[0])

    @property
    def schema_version(self) -> int:
        with self._lock:
            return schema_version(self._conn)

    def records(self) -> dict[str, Record]:
        with self._lock:
            rows = self._conn.execute(f"SELECT {_SELECT} FROM resources ORDER BY id").fetchall()
        with gc_paused():
            return {row[0]: _record(row) for row in rows}

    def get(self, resource_id: str) -> Record | None:
        with self._lock:
            row = self._conn.execute(f"SELECT {_SELECT} FROM resources WHERE id = ?", [resource_id]).fetchone()
        return _record(row) if row else None

    def history(self, resource_id: str) -> list[dict]:
        with self._lock:
            cur = self._conn.execute(
                'SELECT id, serial, "at", action, phase, message, "commit", hash FROM resource_history '
                'WHERE id = ? ORDER BY serial, "at"', [resource_id])
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    # ---- writes --------------------------------------------------------------------------

    def begin(self, resource: Resource | Record, commit: str | None, action: str) -> None:
        """Mark an attempt before the provider runs. A Record is accepted for deletes of
        resources that left git (there is no Resource for them any more)."""
        self.bulk_begin([(resource, commit, action)])

    def bulk_begin(self, items: Iterable[tuple[Resource | Record, str | None, str]]) -> None:
        now = _now()
        rows: dict[str, dict] = {}
        history = []
        for resource, commit, action in items:
            phase = DELETING if action == "delete" else APPLYING
            target = resource.hash if isinstance(resource, Resource) else None
            row = self._row(resource.id, resource.type, resource.name, resource.workspace, now,
                            target_hash=target, phase=phase, message=f"{action} in progress", file=resource.file,
                            depends_on=_dumps(sorted(resource.depends_on)), prune=resource.prune,
                            bundle=resource.bundle)
            rows[resource.id] = row
            history.append((resource.id, action, phase, row["message"], commit, target))
        if rows:
            self._write(list(rows.values()), ", ".join(f'"{c}" = excluded."{c}"' for c in _SET_BEGIN), history, now)

    def finish(self, resource_id: str, phase: str, message: str, *, resource: Resource | None = None,
               commit: str | None = None, outputs: dict | None = None) -> None:
        self.bulk_finish([Finish(resource_id, phase, message, resource, commit, outputs)])

    def bulk_finish(self, items: Iterable[Finish | tuple | dict]) -> None:
        """Record many results in one transaction. Ready with a resource stores its spec as the
        applied one; any other phase (or Ready without a resource) keeps the applied spec."""
        now = _now()
        rows: dict[str, dict] = {}
        history = []
        for item in items:
            f = item if isinstance(item, Finish) else Finish(**item) if isinstance(item, dict) else Finish(*item)
            res = f.resource
            type_, ws, name = (res.type, res.workspace, res.name) if res else split_id(f.resource_id)
            applied = f.phase == READY and res is not None
            row = self._row(f.resource_id, type_, name, ws, now, phase=f.phase, message=f.message,
                            outputs=_dumps(_safe_outputs(type_, f.outputs)))
            if res is not None:
                row.update(target_hash=res.hash, file=res.file, depends_on=_dumps(sorted(res.depends_on)),
                           prune=res.prune, bundle=res.bundle)
            if applied:
                row.update(spec=_dumps(res.spec), hash=res.hash, commit=f.commit, applied_at=now)
            rows[f.resource_id] = row  # one row per id: a later item for the same id wins
            history.append((f.resource_id, "finish", f.phase, f.message, f.commit, res.hash if res else None))
        if rows:
            self._write(list(rows.values()), _FINISH_SET, history, now)

    def mark(self, resource: Resource, phase: str, message: str) -> None:
        """Set the phase of a resource that may have no record yet (Blocked, Pending), leaving any
        applied spec alone."""
        self.bulk_mark([(resource, phase, message)])

    def bulk_mark(self, items: Iterable[tuple[Resource, str, str]]) -> None:
        now = _now()
        rows: dict[str, dict] = {}
        history = []
        for resource, phase, message in items:
            rows[resource.id] = self._row(
                resource.id, resource.type, resource.name, resource.workspace, now, phase=phase, message=message,
                file=resource.file, depends_on=_dumps(sorted(resource.depends_on)), prune=resource.prune,
                bundle=resource.bundle)
            history.append((resource.id, "mark", phase, message, None, None))
        if rows:
            self._write(list(rows.values()), ", ".join(f'"{c}" = excluded."{c}"' for c in _SET_MARK), history, now)

    def remove(self, resource_id: str) -> None:
        """Forget a resource after its successful delete (its history stays)."""
        now = _now()
        with self._transaction(now) as (conn, serial):
            conn.execute("DELETE FROM resources WHERE id = ?", [resource_id])
            conn.execute("INSERT INTO resource_history VALUES (?, ?, ?, 'remove', NULL, 'deleted', NULL, NULL)",
                         [resource_id, serial, now])

    # ---- internals -----------------------------------------------------------------------

    @staticmethod
    def _row(rid, type_, name, workspace, now, **values) -> dict:
        row = dict.fromkeys(_NAMES)
        row.update(id=rid, type=type_, name=name, workspace=workspace, created_at=now, updated_at=now)
        row.update(values)
        return row

    def _write(self, rows: list[dict], on_conflict: str, history: list[tuple], now: str) -> None:
        columns = [[row[c] for row in rows] for c in _NAMES]
        select = ", ".join(f"unnest(${i + 1}::{t}[])" for i, (_, t) in enumerate(_COLUMNS))
        names = ", ".join(f'"{c}"' for c in _NAMES)
        with self._transaction(now) as (conn, serial):
            conn.execute(f"INSERT INTO resources ({names}) SELECT {select} "
                         f"ON CONFLICT (id) DO UPDATE SET {on_conflict}", columns)
            h = list(zip(*history))
            conn.execute(
                "INSERT INTO resource_history SELECT unnest($1::VARCHAR[]), $2, $3, unnest($4::VARCHAR[]), "
                "unnest($5::VARCHAR[]), unnest($6::VARCHAR[]), unnest($7::VARCHAR[]), unnest($8::VARCHAR[])",
                [list(h[0]), serial, now, list(h[1]), list(h[2]), list(h[3]), list(h[4]), list(h[5])])

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Every write this thread makes inside runs in one transaction: a group commit, one fsync
        for many small records (the lock keeps other threads out until it ends)."""
        if self.read_only:
            raise RuntimeError("this state store was opened read-only")
        with self._lock:
            if self._batching:
                yield
                return
            self._conn.begin()
            self._batching = True
            try:
                yield
                self._conn.commit()
            except BaseException:
                self._conn.rollback()
                raise
            finally:
                self._batching = False

    @contextmanager
    def _transaction(self, now: str, bump_serial: bool = True) -> Iterator[tuple[duckdb.DuckDBPyConnection, int]]:
        if self.read_only:
            raise RuntimeError("this state store was opened read-only")
        with self._lock:
            conn = self._conn
            if self._batching:  # part of batch()'s transaction, which commits or rolls back for all
                yield conn, _next_serial(conn) if bump_serial else 0
                return
            conn.begin()
            try:
                yield conn, _next_serial(conn) if bump_serial else 0
                conn.commit()
            except BaseException:
                conn.rollback()
                raise


class LiveRecords:
    """The recorded resources of one state dir, kept in memory by the process that writes it (the daemon)
    and refreshed from what changed since the last read: every write to `resources` appends to
    `resource_history` with the serial it moved to, so the ids written after the serial last read are the
    only ones read again (a push that re-runs one workflow reads a few rows, not 10,000)."""

    LOG = 64  # incremental reads remembered for changed_since

    def __init__(self):
        self._records: dict[str, Record] | None = None
        self._serial: int | None = None
        self._path: Path | None = None
        self._since: int | None = None  # the serial of the last full read: changed_since knows what came after
        self._log: list[tuple[int, int, frozenset[str]]] = []  # (from serial, to serial, ids written between)

    def read(self, store: "StateStore") -> tuple[dict[str, Record], int]:
        """(records, serial) now; the dict is new each time, the records in it are shared: do not change them."""
        with store._lock:
            conn = store._conn
            serial = store.serial
            path = Path(store.state_dir).resolve()
            if self._records is None or self._path != path or serial < self._serial:
                self._records = store.records()
                self._since, self._log = serial, []
            elif serial != self._serial:
                changed = [r[0] for r in conn.execute(
                    "SELECT DISTINCT id FROM resource_history WHERE serial > ? AND serial <= ?",
                    [self._serial, serial]).fetchall()]
                rows = conn.execute(f"SELECT {_SELECT} FROM resources WHERE id IN (SELECT unnest($1::VARCHAR[]))",
                                    [changed]).fetchall() if changed else []
                for rid in changed:
                    self._records.pop(rid, None)
                for row in rows:
                    self._records[row[0]] = _record(row)
                self._records = dict(sorted(self._records.items()))  # in id order, as a full read gives them
                self._log.append((self._serial, serial, frozenset(changed)))
                while len(self._log) > self.LOG:
                    self._since = self._log.pop(0)[1]
            self._serial, self._path = serial, path
            return dict(self._records), serial

    def changed_since(self, serial: int) -> set[str] | None:
        """The ids of records written after `serial`, up to the last read; None when this reader cannot tell
        (`serial` is older than its last full read or than what it remembers)."""
        if self._since is None or serial < self._since or serial > (self._serial or 0):
            return None
        return {rid for _, end, ids in self._log if end > serial for rid in ids}


def _next_serial(conn) -> int:
    return int(conn.execute("UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS VARCHAR) "
                            "WHERE key = 'serial' RETURNING value").fetchone()[0])


class StoredRecord(Record):
    """A Record read from the state: its spec JSON is decoded on first use. Most readers (the planner
    compares hashes, the status report shows phases) never look at most specs, and decoding all of
    them was most of reading 10,000 records."""

    @property
    def spec(self) -> dict | None:
        d = self.__dict__
        raw = d.pop("_raw_spec", None)
        if raw is not None:
            d["_spec"] = json.loads(raw)
        return d.get("_spec")

    @spec.setter
    def spec(self, value: dict | None) -> None:
        self.__dict__.pop("_raw_spec", None)
        self.__dict__["_spec"] = value

    def peek_spec(self) -> dict | None:
        """The spec, decoded for the caller only: the record keeps its compact JSON text."""
        raw = self.__dict__.get("_raw_spec")
        return json.loads(raw) if raw is not None else self.__dict__.get("_spec")

    def __getstate__(self):  # pickled (the plan memo) with its spec decoded
        _ = self.spec
        return self.__dict__

    def __setstate__(self, state):
        self.__dict__.update(state)


def _record(row: tuple) -> Record:
    (rid, type_, name, ws, spec, hash_, target, phase, message, commit, file, deps, prune, bundle, outputs,
     created, updated, applied) = row
    record = StoredRecord(
        id=rid, type=type_, name=name, workspace=ws, spec=None,
        hash=hash_, phase=phase, message=message or "", commit=commit, file=file,
        depends_on=json.loads(deps) if deps and deps != "[]" else [],
        prune=True if prune is None else bool(prune), bundle=bundle,
        outputs=json.loads(outputs) if outputs and outputs != "{}" else {}, created_at=created,
        updated_at=updated, applied_at=applied, target_hash=target,
    )
    if spec is not None:
        record.__dict__["_raw_spec"] = spec
    return record


def file_stamp(state_dir: Path, db: str = "state.duckdb") -> tuple:
    """(mtime, size) of a DuckDB file under state_dir and of its WAL: changes whenever it is written."""
    out = []
    for name in (db, db + ".wal"):
        try:
            st = (Path(state_dir) / name).stat()
            out.append((st.st_mtime_ns, st.st_size))
        except OSError:
            out.append(None)
    return tuple(out)


_PID_RE = re.compile(r"PID (\d+)")


class StateInUse(UserError):
    """Another process has the state database open, which DuckDB lets only one writer do: usually for a
    moment (a `reconciler get` reading it), so a daemon tries again at its next cycle."""


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        if not read_only:
            ensure_created(path)  # whole or not at all (store/dbfile.py)
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.ConnectionException as exc:
        if read_only:
            # this process already has the file open writable and DuckDB refuses a second
            # configuration: share that database instead (StateStore.read_only refuses writes)
            return _connect(path, read_only=False)
        raise UserError(f"cannot open the state database {path} for writing: {exc}",
                        hint="close the read-only store of this process first") from None
    except duckdb.IOException as exc:
        text = str(exc)
        if "lock" in text.lower():
            pid = _PID_RE.search(text)
            holder = f"another process (pid {pid.group(1)})" if pid else "another process"
            raise StateInUse(
                f"the state in {path.parent} is in use by {holder}; DuckDB lets one process write it at a "
                "time: wait for it to finish, or stop it") from None
        raise UserError(f"cannot open the state database {path}: {text}") from None
    except duckdb.Error as exc:
        raise UserError(f"cannot open the state database {path}: {exc}") from None
    except OSError as exc:  # creating it beside the real name (store/dbfile.py)
        raise UserError(f"cannot create the state database {path}: {exc}",
                        hint="check that the state dir is writable") from None


def _open_read_only(path: Path) -> duckdb.DuckDBPyConnection:
    """A connection for reading. A missing file reads as an empty state without creating anything;
    a file from an older schema is copied into memory and migrated there, leaving the file alone."""
    if not path.exists():
        conn = duckdb.connect()
        migrate(conn, ":memory:")
        return conn
    conn = _connect(path, read_only=True)
    version = schema_version(conn)
    if version > SCHEMA_VERSION:
        conn.close()
        check_not_newer(version, str(path))
    if version == SCHEMA_VERSION:
        return conn
    conn.close()
    memory = duckdb.connect()
    literal = str(path).replace("'", "''")
    memory.execute(f"ATTACH '{literal}' AS old (READ_ONLY)")
    memory.execute("COPY FROM DATABASE old TO memory")
    memory.execute("DETACH old")
    migrate(memory, ":memory:")
    return memory
