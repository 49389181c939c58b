"""Plans memoised by everything they are a function of (marshalled plain data, never pickles).

A plan depends only on the artefacts at one tree, the recorded state, the
planner options and the code that makes it. When none of those moved, the
previous plan is the answer, and a fresh `reconciler plan` process answers
without importing the models or DuckDB. The state is identified by the size and
modification time of the DuckDB file and its WAL: every write changes one.
"""
from __future__ import annotations

import hashlib
import os
import marshal
import tempfile
from pathlib import Path

from reconciler.store.cacheformat import FORMAT

MEMO_DIR = "plans"
KEEP = 8  # plans kept; the oldest are removed


def state_fingerprint(state_dir: Path) -> tuple:
    out = []
    for name in ("state.duckdb", "state.duckdb.wal"):
        try:
            st = os.stat(Path(state_dir) / name)
            out.append((name, st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append((name, None))
    return tuple(out)


class PlanMemo:
    """One file per memoised plan, named by a digest of its key, so a hit reads only its own plan."""

    def __init__(self, state_dir: Path):
        self.dir = Path(state_dir) / "cache" / MEMO_DIR

    @staticmethod
    def key(source, paths, state_dir: Path, **options) -> tuple | None:
        tree = getattr(source, "tree", None)
        if tree is None:  # a plain folder has no cheap identity
            return None
        return (FORMAT, str(tree.id), tuple(paths or ()), state_fingerprint(state_dir), tuple(sorted(options.items())))

    def _file(self, key) -> Path:
        return self.dir / (hashlib.sha1(repr(key).encode()).hexdigest() + ".plan")

    def get(self, key) -> dict | None:
        if key is None:
            return None
        try:
            stored_key, value = marshal.loads(self._file(key).read_bytes())
        except Exception:  # absent or unreadable: only a cache
            return None
        return value if stored_key == key else None

    def put(self, key, value: dict) -> None:
        if key is None:
            return
        try:
            data = marshal.dumps((key, value))  # plain data: a memo file cannot carry code
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".plan-", dir=self.dir)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._file(key))
            old = sorted(self.dir.glob("*.plan"), key=lambda p: p.stat().st_mtime_ns)[:-KEEP]
            old += list(self.dir.glob("*.pickle"))  # an older release's memo files
            for p in old:
                p.unlink(missing_ok=True)
        except (OSError, ValueError):  # ValueError: something in the plan marshal cannot write
            pass  # a state dir we cannot write to only loses the memo
