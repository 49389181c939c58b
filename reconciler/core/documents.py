"""What the loader hands to the resolver: parsed YAML documents with their place.

The pure core never touches git or the filesystem directly: it reads through a
`Source` (implemented in `reconciler.gitops.source`) that lists files and returns
their bytes. Positions of keys inside documents are found again on demand by a
`Locator`, so the fast path (libyaml) keeps no per-key marks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Protocol

# Bump when parsing changes what a blob yields, so persisted parse caches are dropped.
PARSER_VERSION = 2


@dataclass
class Document:
    file: str  # repo-relative POSIX path
    index: int  # 0-based position of the document in its file
    line: int  # 1-based line where the document's content starts
    data: dict  # plain Python data (dict/list/str/int/float/bool/None)
    blob_id: str  # git blob id (or content hash for a working tree)

    @property
    def is_artefact(self) -> bool:
        return isinstance(self.data, dict) and ("version" in self.data or "type" in self.data)


@dataclass
class FileResult:
    """Everything the loader got out of one file."""

    path: str
    blob_id: str
    documents: list[Document] = field(default_factory=list)
    diagnostics: list = field(default_factory=list)  # list[Diagnostic]

    @property
    def broken(self) -> bool:
        return any(d.is_error for d in self.diagnostics)


class Source(Protocol):
    """A readable tree at one commit (or a working tree)."""

    commit: str | None  # full commit id, None for a plain working tree
    root_label: str  # what to show the user: a path or URL

    def list_files(self) -> Iterable[tuple[str, str]]:
        """(repo-relative POSIX path, blob id) of every file, before ignore rules."""

    def read(self, path: str) -> bytes:
        """Bytes of one file; raises FileNotFoundError when absent."""

    def exists(self, path: str) -> bool: ...


class Locator(Protocol):
    def locate(self, file: str, doc_index: int, path: tuple) -> tuple[int, int] | None:
        """1-based (line, col) of the value at key path `path` in document `doc_index` of `file`;
        the nearest existing ancestor when the path does not exist; None when unknown."""
