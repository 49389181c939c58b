"""Parsed YAML files by git blob id, kept between runs so unchanged files are not parsed again.

One pickle file under `STATE_DIR/cache/`. It is only a cache: a missing,
corrupt, unreadable or outdated file (another parser or Python version) is
silently treated as empty, and writes are atomic so a crash never leaves half
a file behind.
"""
from __future__ import annotations

import os
import pickle
import sys
import tempfile
from dataclasses import fields
from pathlib import Path

from reconciler.core.diagnostics import Diagnostic
from reconciler.core.documents import Document, FileResult
from reconciler.core.loader import gc_paused
from reconciler.core.yamlload import PARSER_VERSION

def _models_fingerprint() -> str:
    """Validation results are cached too: any change to the models' or resolver's code invalidates them."""
    import hashlib

    core = Path(__file__).resolve().parent.parent / "core"  # found by path: importing the models costs 0.2 s
    h = hashlib.sha1()
    files = sorted((core / "resources").glob("*.py")) + [core / "resolve.py", core / "resource.py",
                                                         core / "planner.py", core / "plan.py"]
    for f in files:
        try:
            h.update(f.read_bytes())
        except OSError:
            h.update(f.name.encode())
    return h.hexdigest()


# Any change to what an entry holds or to what the parser yields must change this;
# Diagnostic objects are pickled as they are, so their fields are part of it.
FORMAT = ("reconciler-doccache", 2, PARSER_VERSION, sys.version_info[:2],
          tuple(f.name for f in fields(Diagnostic)), _models_fingerprint())
CACHE_FILE = "documents.pickle"
# A save that adds few entries appends them to this small file instead of rewriting the big one
# (rewriting ~20 MB for a one-file change cost 0.3 s); it is folded in once it grows.
DELTA_FILE = "documents.delta.pickle"
DELTA_SHARE = 0.05
# Entries not used in this run are dropped on save once the cache holds more than this.
MAX_ENTRIES = 200_000

# entry: (path last seen at, ((index, line, data), ...), (Diagnostic, ...))
Entry = tuple


class DocCache:
    def __init__(self, state_dir: Path, max_entries: int = MAX_ENTRIES):
        self.path = Path(state_dir) / "cache" / CACHE_FILE
        self.delta_path = self.path.with_name(DELTA_FILE)
        self.max_entries = max_entries
        self._entries, self._validated = self._read(self.path)
        self._delta_entries, self._delta_validated = self._read(self.delta_path) if self._entries else ({}, {})
        self._entries.update(self._delta_entries)
        self._validated.update(self._delta_validated)
        self._new: set[str] = set()
        self._new_validated: set = set()
        self._used: set[str] = set()
        self._used_validated: set = set()
        self._dirty = False

    @staticmethod
    def _read(path: Path) -> tuple[dict[str, Entry], dict]:
        try:
            data = path.read_bytes()
            with gc_paused():
                stored = pickle.loads(data)
        except Exception:  # absent, truncated, written by other code: start empty
            return {}, {}
        if not isinstance(stored, dict) or stored.get("format") != FORMAT or not isinstance(stored.get("entries"), dict):
            return {}, {}
        return stored["entries"], stored.get("validated") or {}

    # -- validation results, keyed by (blob id, document index[, workspace override]) ------------------
    def get_validated(self, key):
        hit = self._validated.get(key)
        if hit is not None:
            self._used_validated.add(key)
        return hit

    def put_validated(self, key, value) -> None:
        self._validated[key] = value
        self._used_validated.add(key)
        self._new_validated.add(key)
        self._dirty = True

    def validation_memo(self) -> "ValidationMemo":
        return ValidationMemo(self)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, blob_id: str) -> FileResult | None:
        entry = self._entries.get(blob_id)
        if entry is None:
            return None
        self._used.add(blob_id)
        path, documents, diagnostics = entry
        return FileResult(path, blob_id, [Document(path, index, line, data, blob_id) for index, line, data in documents],
                          list(diagnostics))

    def put(self, blob_id: str, result: FileResult) -> None:
        self._entries[blob_id] = (
            result.path,
            tuple((doc.index, doc.line, doc.data) for doc in result.documents),
            tuple(result.diagnostics),
        )
        self._used.add(blob_id)
        self._new.add(blob_id)
        self._dirty = True

    def save(self) -> bool:
        """Write the cache if anything was put since it was read; True when written.
        A cache that cannot be written (read-only or full disk) is skipped, not an error."""
        if not self._dirty:
            return False
        small = len(self._new) + len(self._new_validated)
        if self._entries and self.path.exists() and small + len(self._delta_entries) + len(self._delta_validated) \
                <= DELTA_SHARE * (len(self._entries) + len(self._validated)):
            self._delta_entries.update({b: self._entries[b] for b in self._new})
            self._delta_validated.update({k: self._validated[k] for k in self._new_validated})
            if self._dump(self.delta_path, self._delta_entries, self._delta_validated):
                self._new, self._new_validated, self._dirty = set(), set(), False
                return True
            return False
        entries, validated = self._entries, self._validated
        if len(entries) > self.max_entries:
            entries = {blob: entry for blob, entry in entries.items() if blob in self._used}
        if len(validated) > self.max_entries:
            validated = {k: v for k, v in validated.items() if k in self._used_validated}
        if not self._dump(self.path, entries, validated):
            return False
        self.delta_path.unlink(missing_ok=True)  # folded into the main file
        self._entries, self._validated = entries, validated
        self._delta_entries, self._delta_validated = {}, {}
        self._new, self._new_validated, self._dirty = set(), set(), False
        return True

    @staticmethod
    def _dump(path: Path, entries: dict, validated: dict) -> bool:
        """Atomically (temp file + rename): a crash never leaves half a cache file."""
        tmp = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".documents-", dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"format": FORMAT, "entries": entries, "validated": validated}, f, protocol=5)
            os.replace(tmp, path)
            return True
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return False


class ValidationMemo:
    """The get/put view of a DocCache that the resolver takes as its `memo`."""

    def __init__(self, cache: DocCache):
        self.get = cache.get_validated
        self.put = cache.put_validated

