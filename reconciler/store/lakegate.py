"""One process, one lake file: the query databases that read it step aside while it is written.

DuckDB refuses to open a database file in one process through two database instances
("unique file handle conflict"), and the query engine keeps the lake attached read-only in an
instance of its own. So everything that opens the lake for itself (a workflow run, the
workspace provider, the drift check) holds the gate exclusively: the readers registered for
that file finish their query in hand, are closed, and new queries wait (or are told the lake
is busy) until the writer is done. Other processes are kept apart by DuckDB's own file lock.

A long-lived process (the daemon) may keep its write connection open between workflow runs
(`keep_open`): opening a lake of thousands of tables and closing it again cost ~0.5 s a run. A held
connection is closed when this process's query database wants the file, when it was idle for the
time given, or when another process asks for the file by creating `<lake>.wanted` (`ask_release`;
the holder looks for it at least every second).
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

_cond = threading.Condition()
_writers: dict[str, int] = {}
_readers: dict[str, dict[int, "Reader"]] = {}
_held: dict[str, tuple[object, float]] = {}  # lake -> (an idle write connection kept open, until when)
_keep_seconds = 0.0  # how long an idle write connection is kept (0: closed at once)
_closing: dict[str, int] = {}  # lake -> closes in progress on their own threads
_opening: set[str] = set()  # lakes being opened ahead


class LakeBusyError(Exception):
    pass


def _key(path) -> str:
    return str(Path(path).resolve())


class Reader:
    """A registered reader of one lake file: `close` is called (without a query in hand) when a writer
    comes; `use()` brackets each query."""

    def __init__(self, path, close: Callable[[], None]):
        self.key = _key(path)
        self._close = close
        self.active = 0
        self.closed = False
        drop_held(path)  # the reader's own database instance opens the file next
        with _cond:
            _readers.setdefault(self.key, {})[id(self)] = self

    @contextmanager
    def use(self, wait: float = 5.0) -> Iterator[None]:
        with _cond:
            if not _cond.wait_for(lambda: not _writers.get(self.key), timeout=wait):
                raise LakeBusyError("a workflow is writing the lake right now")
            if self.closed:
                raise LakeBusyError("the lake changed; the query database is being rebuilt")
            self.active += 1
        try:
            yield
        finally:
            with _cond:
                self.active -= 1
                _cond.notify_all()

    def retire(self) -> None:
        with _cond:
            _readers.get(self.key, {}).pop(id(self), None)
            _cond.wait_for(lambda: self.active == 0)
            self._shut()

    def _shut(self) -> None:
        if not self.closed:
            self.closed = True
            try:
                self._close()
            except Exception:  # a reader that cannot close cleanly is gone either way
                pass


def writing_now(path) -> bool:
    with _cond:
        return bool(_writers.get(_key(path)))


def enter(path) -> None:
    """Take the lake for this process's own connection: close its readers once their queries end."""
    key = _key(path)
    with _cond:
        _writers[key] = _writers.get(key, 0) + 1
        readers = list(_readers.pop(key, {}).values())
        _cond.wait_for(lambda: all(r.active == 0 for r in readers))
        for r in readers:
            r._shut()


def leave(path) -> None:
    key = _key(path)
    with _cond:
        _writers[key] = max(0, _writers.get(key, 0) - 1)
        if not _writers[key]:
            del _writers[key]
        _cond.notify_all()


@contextmanager
def exclusive(path) -> Iterator[None]:
    enter(path)
    try:
        yield
    finally:
        leave(path)


WRITE_PATIENCE = 35.0  # seconds: longer than a query may run (30 s), so a reader always gets to finish


def keep_open(seconds: float) -> None:
    """Keep write connections released by `release` open while idle for up to `seconds` (0: never)."""
    global _keep_seconds
    _keep_seconds = max(0.0, seconds)


def release(path, conn, hold: bool = True) -> None:
    """The end of a write: the connection is kept for the next one (see keep_open), or closed on a thread
    of its own (closing a large lake takes 0.1-0.3 s, spent in DuckDB without the GIL): whoever opens the
    file next, in this process, waits for that close."""
    key = _key(path)
    with _cond:
        if hold and _keep_seconds > 0 and key not in _held and not _readers.get(key):
            if not _wanted(key):
                _held[key] = (conn, time.monotonic() + _keep_seconds)
                return
            _clear_wanted(key)  # another process asked for the file: it gets it now (it asks again if still busy)
        _closing[key] = _closing.get(key, 0) + 1

    def close() -> None:
        try:
            conn.close()
        except Exception:  # closing a connection that failed is closing it
            pass
        finally:
            with _cond:
                _closing[key] -= 1
                if not _closing[key]:
                    del _closing[key]
                _cond.notify_all()

    threading.Thread(target=close, name="lake-close", daemon=False).start()


@contextmanager
def held_between_writes(path, seconds: float = 30.0) -> Iterator[None]:
    """Keep this process's write connection to `path` open from one write to the next while the block runs,
    and close it at the end: a CLI apply runs one workflow after another, and opening and closing a lake of
    a thousand tables for each run took 55 s of thread time in a 115 s apply of 2,000 artefacts. Another
    process that asks for the file (`ask_release`) gets it when the write in hand ends (`release`)."""
    previous = _keep_seconds
    keep_open(seconds)
    try:
        yield
    finally:
        keep_open(previous)
        drop_held(path)


def open_ahead(path, unused_for: float = 30.0) -> None:
    """Start opening the lake for writing on a thread of its own (a daemon does this when a new commit
    comes in, before it knows whether a workflow will run): the next `connect_for_writing` takes it. An
    unused one is closed by `close_idle` after `unused_for` seconds."""
    key = _key(path)
    with _cond:
        if key in _held or key in _opening or _readers.get(key) or not Path(key).exists():
            return
        _opening.add(key)

    def open_() -> None:
        conn = kept = None
        try:
            wait_closed(key)
            conn = _connect(key, WRITE_PATIENCE)
        except Exception:  # the run opens it itself, and reports what is wrong
            conn = None
        finally:
            with _cond:
                _opening.discard(key)
                if conn is not None and key not in _held and not _readers.get(key):
                    _held[key] = (conn, time.monotonic() + unused_for)
                    kept = conn
                _cond.notify_all()  # connect_for_writing and drop_held wait for the open to end
            if conn is not None and kept is None:
                conn.close()

    threading.Thread(target=open_, name="lake-open", daemon=True).start()


def wait_closed(path_or_key) -> None:
    key = path_or_key if isinstance(path_or_key, str) else _key(path_or_key)
    with _cond:
        _cond.wait_for(lambda: not _closing.get(key))


def close_idle(now: float | None = None) -> int:
    """Close held connections past their time, or whose file another process asked for; how many."""
    now = time.monotonic() if now is None else now
    closed = 0
    with _cond:
        for key, (_, until) in list(_held.items()):
            if now >= until or _wanted(key):
                _drop_held(key)
                closed += 1
    return closed


def drop_held(path) -> None:
    """Close a connection kept open for `path` and wait for closes in progress: a read-only open or a
    reader's own database instance comes next, which DuckDB refuses beside a write connection."""
    key = _key(path)
    with _cond:
        _drop_held(key)
        _cond.wait_for(lambda: not _closing.get(key) and key not in _opening)
        _drop_held(key)  # what an open in progress just left


def discard_held(path) -> None:
    """Let go of a connection kept or opened ahead for `path`, closing it on its own thread (no waiting)."""
    key = _key(path)
    with _cond:
        held = _held.pop(key, None)
    if held is not None:
        release(path, held[0], hold=False)


def _drop_held(key: str) -> None:
    held = _held.pop(key, None)
    if held is not None:
        try:
            held[0].close()
        except Exception:  # closing a connection that failed is closing it
            pass
    _clear_wanted(key)


def _wanted(key: str) -> bool:
    return Path(key + ".wanted").exists()


def _clear_wanted(key: str) -> None:
    """The request of another process (ask_release) is answered."""
    try:
        Path(key + ".wanted").unlink()
    except OSError:
        pass


def ask_release(path) -> None:
    """Ask the process holding the lake idle (a daemon) to close it: another process wants to read it."""
    try:
        Path(_key(path) + ".wanted").touch()
    except OSError:
        pass


def connect_for_writing(path, patience: float = WRITE_PATIENCE):
    """duckdb.connect(path) for writing, waiting while another process holds the file (a `reconciler
    query` reading it, say: DuckDB's file lock refuses a writer until the reader is done). A connection
    this process kept open (see keep_open) is taken instead."""
    key = _key(path)
    with _cond:
        _cond.wait_for(lambda: key not in _opening)  # an open ahead in progress: take what it opens
        held = _held.pop(key, None)
    if held is not None:
        return held[0]
    wait_closed(key)
    return _connect(key, patience)


def _connect(path, patience: float):
    import duckdb

    from reconciler.store.dbfile import ensure_created

    ensure_created(path)  # a kill -9 while DuckDB makes a new file must not leave a file it refuses
    deadline = time.monotonic() + patience
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.25)
