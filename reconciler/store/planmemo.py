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
        from reconciler.store.writebehind import wait_for_writers

        wait_for_writers(self.dir.parent)  # a memo an earlier command is still writing, whole
        try:
            with open(self._file(key), "rb") as f:
                stored_key, value = marshal.load(f)
                if stored_key != key:
                    return None
                value["access"] = marshal.load(f)  # a second record (see put)
        except Exception:  # absent, unreadable or cut short: only a cache
            return None
        return value

    def put(self, key, value: dict) -> None:
        if key is None:
            return
        value = dict(value)
        access = value.pop("access", [])
        try:
            data = marshal.dumps((key, value)) + marshal.dumps(access)  # plain data: a memo cannot carry code
        except ValueError:  # something in the plan marshal cannot write: no memo
            return
        self._write(key, data)

    def put_later(self, key, plan, ready: bool = True) -> None:
        """`put` the memo of `plan` (its access diff made): in a one-shot command, written by a child after
        the command has answered (store/writebehind.py); elsewhere now. A cold plan of 10,000 resources
        marshals a ~10 MB memo (~0.1 s) that only a later process reads. `ready=False`: some of the plan's
        specs are still to be read from a database, so the plan becomes plain data here first."""
        from reconciler.store.writebehind import write_behind

        if key is None:
            return
        if ready:
            write_behind(lambda: self.put(key, plan.to_json()), self.dir.parent)
        else:
            value = plan.to_json()
            write_behind(lambda: self.put(key, value), self.dir.parent)

    def _write(self, key, data: bytes) -> None:
        try:
            from reconciler.store.writebehind import detached

            self.dir.mkdir(parents=not detached(), exist_ok=True)  # not again under a removed state dir
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
