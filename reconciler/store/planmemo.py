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
import struct
import tempfile
from pathlib import Path
from typing import Callable

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
            with open(self._file(key), "rb") as f:
                stored_key, value = marshal.load(f)
                if stored_key != key:
                    return None
                value["access"] = marshal.load(f)  # a second record: see put_behind
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

    def put_behind(self, key, plan) -> "Callable[[list | None], None] | None":
        """The memo of `plan`, whose access diff is still to come, written by a forked child that marshals
        the plan while this process computes the access. Call the returned function once, with the access,
        or with None when making it failed: the child waits for it, and the command's end for the child.
        None (nothing started) where no child can be forked: then `put` the whole plan afterwards.

        A cold plan of 10,000 resources marshalled its ~10 MB memo (~0.1 s) after its access diff
        (~0.15 s), both on one core while the other idled. The child only reads the plan; the access
        reaches it through a pipe as one more marshalled record, and the file is written only once that
        record is whole."""
        from reconciler.store.writebehind import write_behind, writes_behind

        if key is None or not writes_behind():
            return None
        read_end, write_end = os.pipe()

        def child() -> None:
            os.close(write_end)
            value = plan.to_json()
            value.pop("access", None)
            head = marshal.dumps((key, value))
            with os.fdopen(read_end, "rb") as pipe:
                size = struct.unpack("<Q", pipe.read(8))[0]  # raises on a parent that sent nothing
                access = pipe.read(size)
            marshal.loads(access)  # raises on a record cut short: then no memo
            self._write(key, head + access)

        if not write_behind(child, in_line=False):
            os.close(read_end)
            os.close(write_end)
            return None
        os.close(read_end)

        def finish(access: list | None) -> None:
            """The access diff to the child; None: there is none (its making failed), so no memo."""
            try:
                with os.fdopen(write_end, "wb") as pipe:
                    if access is not None:
                        data = marshal.dumps(access)
                        pipe.write(struct.pack("<Q", len(data)) + data)
            except (OSError, ValueError):  # the child is gone, or the access marshal cannot write: no memo
                pass

        return finish

    def _write(self, key, data: bytes) -> None:
        try:
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
