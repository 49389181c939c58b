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
# Entries not used in this run are dropped on save once the cache holds more than this.
MAX_ENTRIES = 200_000

# entry: (path last seen at, ((index, line, data), ...), (Diagnostic, ...))
Entry = tuple


class DocCache:
    def __init__(self, state_dir: Path, max_entries: int = MAX_ENTRIES):
        self.path = Path(state_dir) / "cache" / CACHE_FILE
        self.max_entries = max_entries
        self._entries, self._validated = self._read()
        self._used: set[str] = set()
        self._used_validated: set = set()
        self._dirty = False

    def _read(self) -> tuple[dict[str, Entry], dict]:
        try:
            data = self.path.read_bytes()
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
        self._dirty = True

    def save(self) -> bool:
        """Write the cache if anything was put since it was read; True when written.
        A cache that cannot be written (read-only or full disk) is skipped, not an error."""
        if not self._dirty:
            return False
        entries, validated = self._entries, self._validated
        if len(entries) > self.max_entries:
            entries = {blob: entry for blob, entry in entries.items() if blob in self._used}
        if len(validated) > self.max_entries:
            validated = {k: v for k, v in validated.items() if k in self._used_validated}
        tmp = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".documents-", dir=self.path.parent)
            with os.fdopen(fd, "wb") as f:
                pickle.dump({"format": FORMAT, "entries": entries, "validated": validated}, f, protocol=5)
            os.replace(tmp, self.path)
        except OSError:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            return False
        self._entries, self._validated = entries, validated
        self._dirty = False
        return True


class ValidationMemo:
    """The get/put view of a DocCache that the resolver takes as its `memo`."""

    def __init__(self, cache: DocCache):
        self.get = cache.get_validated
        self.put = cache.put_validated

