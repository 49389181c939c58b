"""Parsed YAML files and validation results by git blob id, kept between runs so unchanged files are
neither parsed nor validated again; plus the warm planner's snapshots (engine/warm.py).

One SQLite file under `STATE_DIR/cache/` (Python's own sqlite3), read by key: a fresh process that
plans a one-file change reads the few entries it needs instead of the whole cache, and a full load
reads every entry in one query. Values are `marshal`led plain data (tuples, dicts, lists, strings,
numbers), never pickles, so a cache file cannot carry code. It is only a cache: a missing, corrupt,
locked or outdated file (another format, parser, Python or models version) reads as empty, and a
write that fails is skipped, never an error.
"""
from __future__ import annotations

import marshal
import sqlite3
from pathlib import Path

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.documents import Document, FileResult
from reconciler.core.resource import JobSpec, Ref
from reconciler.store.cacheformat import FORMAT

CACHE_FILE = "documents.sqlite"
# Entries not used in this run are dropped on save once the cache holds more than this.
MAX_ENTRIES = 200_000
# Snapshots kept (the newest written); each is one warm planner's state.
KEEP_SNAPSHOTS = 4
# A save of more entries than this merges the WAL into the file at once.
CHECKPOINT_AFTER = 1000
# A load that looks up more entries than this reads the whole table in one query instead.
BULK_FROM = 256

# rowid tables: large values in a WITHOUT ROWID table's B-tree cost 3x more to write
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS docs (k TEXT PRIMARY KEY, v BLOB);
CREATE TABLE IF NOT EXISTS validated (k TEXT PRIMARY KEY, v BLOB);
CREATE TABLE IF NOT EXISTS snapshots (k TEXT PRIMARY KEY, v BLOB, at INTEGER);  -- at: write order
"""
_TABLES = ("meta", "docs", "validated", "snapshots")


# -- plain-data forms of what the cache holds (marshal takes only builtin types) ------------------------
def entry_of(result: FileResult) -> tuple:
    """A parsed file as the cache stores it: (path, ((index, line, data), ...), (diagnostic, ...))."""
    return (result.path, tuple((doc.index, doc.line, doc.data) for doc in result.documents),
            tuple(d.to_data() for d in result.diagnostics))


def _result_of(blob_id: str, entry: tuple) -> FileResult:
    path, documents, diagnostics = entry
    return FileResult(path, blob_id, [Document(path, index, line, data, blob_id) for index, line, data in documents],
                      [Diagnostic(*d) for d in diagnostics])


def validated_to_data(v) -> tuple:
    if isinstance(v, str):  # a remembered policy-filter verdict
        return ("S", v)
    return ("V", v.spec, v.hash, tuple(tuple(r) for r in v.refs), tuple(tuple(j) for j in v.job_specs),
            tuple(d.to_data() for d in v.diagnostics), v.identity)


def validated_from_data(t: tuple):
    if t[0] == "S":
        return t[1]
    from reconciler.core.resolve import Validated

    _, spec, hash_, refs, job_specs, diags, identity = t
    return Validated(spec, hash_, tuple(Ref(*r) for r in refs), tuple(JobSpec(*j) for j in job_specs),
                     tuple(Diagnostic(*d) for d in diags), identity)


def _key(key) -> str:
    """A validation key ((blob id, document index[, workspace]) or a policy-filter tuple) as text."""
    return key if isinstance(key, str) else repr(key)


BUSY_TIMEOUT = 2.0  # seconds a command waits for another process's transaction on the cache
BACKGROUND_BUSY_TIMEOUT = 30.0  # seconds a writer outliving its command waits for another's transaction


class DocCache:
    def __init__(self, state_dir: Path, max_entries: int = MAX_ENTRIES):
        self.path = Path(state_dir) / "cache" / CACHE_FILE
        self.max_entries = max_entries
        self._conn: sqlite3.Connection | None = None
        self._opened = False
        self._checked_absent_at: tuple | None = None  # the file's stamp when it was found unreadable
        self._docs: dict[str, tuple] = {}  # read or put in this run: blob -> entry
        self._built: dict[str, FileResult] = {}  # blob -> its FileResult, where one was put or built ahead
        self._validated: dict[str, object] = {}  # key text -> Validated | str
        self._all: set[str] = set()  # tables read whole already
        self._new_docs: dict[str, tuple] = {}
        self._new_validated: dict[str, object] = {}  # key text -> stored form, or a value put_validated took
        self._used: set[str] = set()
        self._used_validated: set[str] = set()

    # -- the database --------------------------------------------------------------------------
    def _db(self) -> sqlite3.Connection | None:
        """The open cache database, or None when there is none to read (absent, corrupt, another format).
        A file that was absent is looked for again: another process (a worker, a child resolve) may write it."""
        if self._opened and (self._conn is not None or self._checked_absent_at == _file_stamp(self.path)):
            return self._conn
        self._opened = True
        self._checked_absent_at = _file_stamp(self.path)
        if self._checked_absent_at is None:
            return None
        self._conn = self._connect(create=False)
        return self._conn

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        from reconciler.store.writebehind import detached, wait_for_writers

        wait_for_writers(self.path.parent)  # an earlier command's caches, whole (store/writebehind.py)
        conn = None
        try:
            # a command's writer child and its cold load's worker may write at once, after the command: neither
            # is waited for, so either waits for the other's transaction (~0.1-0.2 s at 10,000 files) longer
            timeout = BACKGROUND_BUSY_TIMEOUT if detached() else BUSY_TIMEOUT
            conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            # A crash of the process never loses a committed write in WAL mode; only a crash of the machine
            # could, and a damaged cache file reads as empty (it is deleted and written again).
            conn.execute("PRAGMA synchronous=OFF")
            try:
                row = conn.execute("SELECT v FROM meta WHERE k = 'format'").fetchone()
            except sqlite3.OperationalError:  # a new file: no tables yet
                row = None
            if row is None or row[0] != repr(FORMAT):
                if not create:
                    conn.close()
                    return None
                conn.execute("BEGIN IMMEDIATE")
                for table in _TABLES:  # another format: its tables may differ too
                    conn.execute(f"DROP TABLE IF EXISTS {table}")
                conn.execute("COMMIT")
                conn.executescript(_SCHEMA)
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (repr(FORMAT),))
            return conn
        except (sqlite3.Error, OSError) as exc:
            if conn is not None:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            # a corrupt file: start over (it is only a cache); but a file another process is writing is not
            # corrupt, and deleting it under that writer would lose its work
            if create and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF not in (sqlite3.SQLITE_BUSY,
                                                                                   sqlite3.SQLITE_LOCKED):
                try:
                    self.path.unlink(missing_ok=True)
                    for extra in ("-wal", "-shm"):
                        Path(str(self.path) + extra).unlink(missing_ok=True)
                except OSError:
                    pass
            return None

    def _select(self, table: str, keys=None) -> list[tuple]:
        conn = self._db()
        if conn is None:
            return []
        try:
            if keys is None:
                return conn.execute(f"SELECT k, v FROM {table}").fetchall()
            return [row for k in keys for row in conn.execute(f"SELECT k, v FROM {table} WHERE k = ?", (k,))]
        except sqlite3.Error:
            return []

    def __len__(self) -> int:
        conn = self._db()
        known = set(self._new_docs)
        if conn is None:
            return len(known)
        try:
            stored = conn.execute("SELECT count(*) FROM docs").fetchone()[0]
        except sqlite3.Error:
            return len(known)
        return stored + len([b for b in known if not self._stored("docs", b)])

    def _stored(self, table: str, key: str) -> bool:
        conn = self._db()
        try:
            return conn is not None and conn.execute(f"SELECT 1 FROM {table} WHERE k = ?", (key,)).fetchone() is not None
        except sqlite3.Error:
            return False

    # -- parsed files --------------------------------------------------------------------------------
    def _prefetch(self, table: str, memory: dict, keys, decode) -> None:
        """Read the entries of many keys at once: the whole table in one query for a large load."""
        wanted = [k for k in keys if k not in memory]
        if not wanted or table in self._all:
            return
        if len(wanted) >= BULK_FROM:
            rows = self._select(table)
            self._all.add(table)
        else:
            rows = self._select(table, wanted)
        for k, v in rows:
            if k not in memory:
                memory[k] = decode(v)

    def prefetch(self, blob_ids) -> None:
        self._prefetch("docs", self._docs, blob_ids, _loads)

    def get(self, blob_id: str) -> FileResult | None:
        """The parsed file (shared: treat it as read-only), or None."""
        built = self._built.get(blob_id)
        if built is not None:
            self._used.add(blob_id)
            return built
        entry = self._docs.get(blob_id)
        if entry is None and "docs" not in self._all:
            rows = self._select("docs", [blob_id])
            entry = _loads(rows[0][1]) if rows else None
            if entry is not None:
                self._docs[blob_id] = entry
        if entry is None:
            return None
        self._used.add(blob_id)
        return _result_of(blob_id, entry)

    def put(self, blob_id: str, result: FileResult) -> None:
        """A parsed file, kept as it is for `get` too (a load that follows builds nothing again)."""
        self.put_entry(blob_id, entry_of(result))
        self._built[blob_id] = result

    def put_entry(self, blob_id: str, entry: tuple, new: bool = True, build: bool = False) -> None:
        """A parsed file in its stored form (`entry_of`); `new=False`: another process stored it already.
        `build`: its FileResult is made now rather than by the `get` that asks for it."""
        self._docs[blob_id] = entry
        self._built.pop(blob_id, None)
        if new:
            self._new_docs[blob_id] = entry
        self._used.add(blob_id)
        if build:
            self._built[blob_id] = _result_of(blob_id, entry)

    def has(self, blob_id: str) -> bool:
        if blob_id in self._docs:
            return True
        return "docs" not in self._all and self._stored("docs", blob_id)

    def ready_for_writers(self) -> bool:
        """Make sure the cache file exists with its tables (before worker processes write to it)."""
        return self._write(lambda conn: None)

    # -- validation results, keyed by (blob id, document index[, workspace override]) ------------------
    def prefetch_validated(self, keys) -> None:
        self._prefetch("validated", self._validated, map(_key, keys), _decoded)

    def get_validated(self, key):
        k = _key(key)
        hit = self._validated.get(k)
        if hit is None and "validated" not in self._all:
            rows = self._select("validated", [k])
            if rows:
                hit = self._validated[k] = _decoded(rows[0][1])
        if hit is not None:
            self._used_validated.add(k)
        return hit

    def put_validated(self, key, value) -> None:
        """A validation result (`Validated`, or a policy filter's verdict); turned into its stored form only
        when written, which a one-shot command leaves to its writer child (store/writebehind.py)."""
        k = _key(key)
        self._validated[k] = value
        self._new_validated[k] = value
        self._used_validated.add(k)

    def put_validated_entry(self, key, data: tuple, new: bool = True) -> None:
        """A validation result in its stored form (`validated_to_data`)."""
        k = _key(key)
        self._validated[k] = validated_from_data(data)
        if new:
            self._new_validated[k] = data
        self._used_validated.add(k)

    def validation_memo(self) -> "ValidationMemo":
        return ValidationMemo(self)

    # -- warm planner snapshots ------------------------------------------------------------------------
    def get_snapshot(self, key: str) -> bytes | None:
        rows = self._select("snapshots", [key])
        return rows[0][1] if rows else None

    def put_snapshot(self, key: str, value: bytes) -> bool:
        """Store one snapshot (written at once, in its own transaction); the oldest beyond KEEP_SNAPSHOTS go."""
        return self._write(lambda conn: (
            conn.execute("INSERT OR REPLACE INTO snapshots VALUES (?, ?, (SELECT coalesce(max(at), 0) + 1 "
                         "FROM snapshots))", (key, value)),
            conn.execute("DELETE FROM snapshots WHERE k NOT IN (SELECT k FROM snapshots ORDER BY at DESC LIMIT ?)",
                         (KEEP_SNAPSHOTS,))))

    # -- writing ---------------------------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return bool(self._new_docs or self._new_validated)

    def save(self, behind: bool = False) -> bool:
        """Write what was put since the last save; True when written. A cache that cannot be written
        (read-only or full disk, locked by another process for too long) is skipped, not an error.
        `behind=True`: in a one-shot command, written by a child after the command (store/writebehind.py);
        True then means handed over."""
        if not self.dirty:
            return False
        if behind:
            from reconciler.store.writebehind import write_behind, writes_behind

            if writes_behind():
                write_behind(self.split_off().save, self.path.parent)
                return True
        docs = [(k, marshal.dumps(v)) for k, v in self._new_docs.items()]
        validated = [(k, marshal.dumps(v if type(v) is tuple else validated_to_data(v)))
                     for k, v in self._new_validated.items()]

        def write(conn):
            conn.executemany("INSERT OR REPLACE INTO docs VALUES (?, ?)", docs)
            conn.executemany("INSERT OR REPLACE INTO validated VALUES (?, ?)", validated)
            self._prune(conn, "docs", self._used)
            self._prune(conn, "validated", self._used_validated)

        if not self._write(write):
            return False
        if len(docs) + len(validated) > CHECKPOINT_AFTER:
            # merge the WAL now: the next process's first small write would otherwise copy ~20 MB back
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                pass
        self._new_docs, self._new_validated = {}, {}
        return True

    def split_off(self) -> "DocCache":
        """A cache on the same file, through a connection of its own, that takes over what this one has yet
        to write (this one then has nothing pending): what a forked child writes through (a SQLite
        connection must not cross a fork)."""
        other = DocCache(self.path.parent.parent, self.max_entries)
        other._new_docs, other._new_validated = self._new_docs, self._new_validated
        other._used, other._used_validated = self._used, self._used_validated
        self._new_docs, self._new_validated = {}, {}
        return other

    def _prune(self, conn, table: str, used: set[str]) -> None:
        if conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] <= self.max_entries:
            return
        conn.execute("CREATE TEMP TABLE IF NOT EXISTS used_keys (k TEXT PRIMARY KEY)")
        conn.execute("DELETE FROM used_keys")
        conn.executemany("INSERT OR IGNORE INTO used_keys VALUES (?)", ((k,) for k in used))
        conn.execute(f"DELETE FROM {table} WHERE k NOT IN (SELECT k FROM used_keys)")

    def _write(self, body) -> bool:
        conn = self._conn if self._opened and self._conn is not None else None
        if conn is None:
            from reconciler.store.writebehind import detached

            try:  # a detached writer's state dir may have been removed: it does not make it again
                self.path.parent.mkdir(parents=not detached(), exist_ok=True)
            except OSError:
                return False
            conn = self._conn = self._connect(create=True)
            self._opened = True
            if conn is None:
                conn = self._conn = self._connect(create=True)  # a corrupt file was removed: a new one
            if conn is None:
                return False
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                body(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return True
        except sqlite3.Error:
            return False

    def forget_read(self) -> None:
        """Drop the entries read or written so far from memory (they are in the file); a long-lived process
        keeps only what it reads again."""
        if self.dirty:
            return
        self._docs, self._validated, self._built = {}, {}, {}
        self._all = set()
        self._used, self._used_validated = set(), set()

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
        self._conn, self._opened = None, False


def _file_stamp(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def _loads(v: bytes):
    try:
        return marshal.loads(v)
    except (ValueError, EOFError, TypeError):  # a damaged entry reads as a miss
        return None


def _decoded(v: bytes):
    data = _loads(v)
    if not isinstance(data, tuple) or not data:
        return None
    try:
        return validated_from_data(data)
    except (TypeError, ValueError):
        return None


class ValidationMemo:
    """The get/put view of a DocCache that the resolver takes as its `memo`."""

    def __init__(self, cache: DocCache):
        self.cache = cache
        self.get = cache.get_validated
        self.put = cache.put_validated
        self.prefetch = cache.prefetch_validated
