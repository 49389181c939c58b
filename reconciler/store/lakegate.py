"""One process, one lake file: the query databases that read it step aside while it is written.

DuckDB refuses to open a database file in one process through two database instances
("unique file handle conflict"), and the query engine keeps the lake attached read-only in an
instance of its own. So everything that opens the lake for itself (a workflow run, the
workspace provider, the drift check) holds the gate exclusively: the readers registered for
that file finish their query in hand, are closed, and new queries wait (or are told the lake
is busy) until the writer is done. Other processes are kept apart by DuckDB's own file lock.
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


def connect_for_writing(path, patience: float = WRITE_PATIENCE):
    """duckdb.connect(path) for writing, waiting while another process holds the file (a `reconciler
    query` reading it, say: DuckDB's file lock refuses a writer until the reader is done)."""
    import duckdb

    deadline = time.monotonic() + patience
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() >= deadline:
                raise
            time.sleep(0.25)
