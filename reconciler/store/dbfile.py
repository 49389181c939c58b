"""DuckDB files that exist whole or not at all.

DuckDB creates a new database file and then writes its first blocks. A `kill -9` between the two
left a file that DuckDB refuses from then on ("exists, but it is not a valid DuckDB database file"),
so the next command failed for good instead of converging (the daemon's crash test found it with
the lake, created by the first workspace while another resource's apply was killed). A new file is
therefore made under a temporary name beside the real one, closed, and only then linked into place.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

_PREFIX = "."
_MARK = ".new-"


def ensure_created(path: Path | str) -> None:
    """Create an empty DuckDB database at `path` unless a file is there already, atomically."""
    path = Path(path)
    if path.exists():
        return
    import duckdb

    _remove_stale(path)
    tmp = path.with_name(f"{_PREFIX}{path.name}{_MARK}{os.getpid()}-{threading.get_ident()}")
    try:
        duckdb.connect(str(tmp)).close()  # a checkpoint on close: the file is complete now
        try:
            os.link(tmp, path)  # fails if another process linked its file first, which is as good
        except FileExistsError:
            pass
        except OSError:  # a file system without hard links
            if not path.exists():
                os.replace(tmp, path)
    finally:
        for leftover in (tmp, Path(f"{tmp}.wal")):
            try:
                leftover.unlink()
            except FileNotFoundError:
                pass


def _remove_stale(path: Path) -> None:
    """Temporary files of creators that died before they finished (their process is gone)."""
    prefix = f"{_PREFIX}{path.name}{_MARK}"
    try:
        entries = [e for e in os.scandir(path.parent) if e.name.startswith(prefix)]
    except OSError:
        return
    for e in entries:
        pid = e.name[len(prefix):].split("-", 1)[0].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            try:
                os.unlink(e.path)
            except OSError:
                pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
