"""A `Source` at one commit -> every YAML document under the configured paths.

Pure: all reading goes through the `Source` protocol. Which files count
follows SPEC section 1: `*.yaml` / `*.yml` under the given path prefixes,
minus `.reconciler/` and what `.reconcilerignore` lists (gitignore syntax and
semantics). An optional cache keyed by blob id skips parsing files that did
not change.
"""
from __future__ import annotations

import gc
import posixpath
import re
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Iterable, Protocol

from .diagnostics import Diagnostic, error
from .documents import Document, FileResult, Source
from .limits import DEFAULT_MAX_BYTES, check_size

IGNORE_FILE = ".reconcilerignore"
STATE_DIR_NAME = ".reconciler"
YAML_SUFFIXES = (".yaml", ".yml")
# load_files reads this many files (or bytes) before it parses them
READ_BATCH = 100
READ_BATCH_BYTES = 4 << 20


class ParseCache(Protocol):
    """Parsed files by blob id (store/doccache.py); it may also offer `prefetch(blob_ids)`."""

    def get(self, blob_id: str) -> FileResult | None: ...

    def put(self, blob_id: str, result: FileResult) -> None: ...


@dataclass
class LoadResult:
    files: dict[str, FileResult] = field(default_factory=dict)  # path -> result, in path order
    diagnostics: list[Diagnostic] = field(default_factory=list)  # the loader's own and every file's

    @property
    def documents(self) -> list[Document]:
        """Artefact documents (a dict with `version` or `type`), in file order."""
        return [doc for result in self.files.values() for doc in result.documents if doc.is_artefact]

    @property
    def broken_files(self) -> set[str]:
        return {path for path, result in self.files.items() if result.broken}


class IgnoreRules:
    """`.reconcilerignore` with git's semantics, including the rule pathspec leaves out:
    git never looks inside an excluded directory, so nothing under it can be re-included."""

    def __init__(self, lines: Iterable[str]):
        import pathspec  # only for a repository that has ignore rules

        self._spec = pathspec.GitIgnoreSpec.from_lines(list(lines))
        self._dirs: dict[str, bool] = {}

    def _dir_ignored(self, directory: str) -> bool:
        ignored = self._dirs.get(directory)
        if ignored is None:
            parent = posixpath.dirname(directory)
            ignored = (bool(parent) and self._dir_ignored(parent)) or self._spec.match_file(directory + "/")
            self._dirs[directory] = ignored
        return ignored

    def ignored(self, path: str) -> bool:
        directory = posixpath.dirname(path)
        return (bool(directory) and self._dir_ignored(directory)) or self._spec.match_file(path)


def _prefixes(paths: list[str] | None) -> list[str] | None:
    """Normalised path prefixes; None means the whole tree."""
    if not paths:
        return None
    prefixes = []
    for raw in paths:
        prefix = posixpath.normpath(raw.replace("\\", "/")).strip("/")
        if prefix in (".", ""):
            return None
        prefixes.append(prefix)
    return prefixes


def _under(path: str, prefixes: list[str] | None) -> bool:
    return prefixes is None or any(path == p or path.startswith(p + "/") for p in prefixes)


def _is_candidate(path: str) -> bool:
    return path.endswith(YAML_SUFFIXES) and STATE_DIR_NAME not in path.split("/")


def _at_path(result, path: str, blob_id: str) -> FileResult:
    """A cached result for the same blob seen at another path (a copy or a rename): same
    documents and diagnostics, placed at `path`."""
    if getattr(result, "path", None) == path and isinstance(result, FileResult):
        return result
    return FileResult(
        path, blob_id,
        [Document(path, doc.index, doc.line, doc.data, blob_id) for doc in result.documents],
        [replace(d, file=path) for d in result.diagnostics],
    )


@contextmanager
def gc_paused():
    """Build many small acyclic objects without the cyclic collector re-scanning them:
    with 10,000 parsed files alive, its full passes cost more than the parsing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_ignore_rules(source: Source) -> IgnoreRules | None:
    if not source.exists(IGNORE_FILE):
        return None
    text = source.read(IGNORE_FILE).decode("utf-8", "replace")
    return IgnoreRules(text.splitlines())


def select_files(source: Source, paths: list[str] | None = None) -> list[tuple[str, str]]:
    """(path, blob id) of the YAML files the loader reads, sorted by path."""
    prefixes = _prefixes(paths)
    rules = load_ignore_rules(source)
    selected = [
        (path, blob_id) for path, blob_id in source.list_files()
        if _is_candidate(path) and _under(path, prefixes) and not (rules and rules.ignored(path))
    ]
    selected.sort()
    return selected


def load(source: Source, paths: list[str] | None = None, cache: ParseCache | None = None,
         max_bytes: int = DEFAULT_MAX_BYTES, selected: list[tuple[str, str]] | None = None) -> LoadResult:
    """Parse every selected YAML file of `source`. Results may come from `cache`
    and be shared with it: treat documents' data as read-only. `selected`: `select_files(source, paths)`,
    when the caller has it already."""
    result = LoadResult()
    if selected is None:
        selected = select_files(source, paths)
    prefetch = getattr(cache, "prefetch", None)
    if prefetch is not None:  # one read of the cache for a large load, not one per file
        prefetch([blob_id for _, blob_id in selected])
    with gc_paused():
        files: dict[str, FileResult] = {}
        missing = []
        for path, blob_id in selected:
            cached = cache.get(blob_id) if cache is not None else None
            if cached is not None:
                files[path] = _at_path(cached, path, blob_id)
            else:
                missing.append((path, blob_id))
        for file_result in load_files(source, missing, max_bytes, cache):
            files[file_result.path] = file_result
        for path, _ in selected:  # in path order
            file_result = result.files[path] = files[path]
            result.diagnostics.extend(file_result.diagnostics)
    return result


def wanted(path: str, paths: list[str] | None, rules: IgnoreRules | None) -> bool:
    """Whether the loader reads `path` (the same rule `select_files` applies to a whole tree)."""
    return _is_candidate(path) and _under(path, _prefixes(paths)) and not (rules and rules.ignored(path))


def load_file(source: Source, path: str, blob_id: str, cache: ParseCache | None = None,
              max_bytes: int = DEFAULT_MAX_BYTES) -> FileResult:
    return _load_file(source, path, blob_id, cache, max_bytes)


def load_files(source: Source, share: list[tuple[str, str]], max_bytes: int = DEFAULT_MAX_BYTES,
               cache: ParseCache | None = None) -> list[FileResult]:
    """`load_file` of each (path, blob id), not looked up in `cache` (but put there once parsed), in stages:
    a batch of files read (up to READ_BATCH files or READ_BATCH_BYTES), then parsed, then the next batch.
    That keeps each stage's code and data in the CPU's caches (reading and parsing file by file took ~10 %
    more CPU on the bench repository), and the bytes held at once stay bounded."""
    from .yamlload import parse_file  # here: a process that parses nothing never imports the parsers

    results = []
    start = 0
    while start < len(share):
        batch, held = [], 0
        for path, blob_id in share[start:start + READ_BATCH]:
            data = read_checked(source, path, blob_id, max_bytes)
            batch.append((path, blob_id, data))
            start += 1
            held += 0 if isinstance(data, FileResult) else len(data)
            if held >= READ_BATCH_BYTES:
                break
        for path, blob_id, data in batch:
            if isinstance(data, FileResult):  # too large or unreadable: not cached
                results.append(data)
                continue
            result = parse_file(path, data, blob_id, max_bytes=max_bytes)
            if cache is not None:
                cache.put(blob_id, result)
            results.append(result)
    return results


def _load_file(source: Source, path: str, blob_id: str, cache: ParseCache | None, max_bytes: int) -> FileResult:
    cached = cache.get(blob_id) if cache is not None else None
    if cached is not None:
        return _at_path(cached, path, blob_id)
    return load_files(source, [(path, blob_id)], max_bytes, cache)[0]


def read_checked(source: Source, path: str, blob_id: str, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes | FileResult:
    """The file's bytes, or a FileResult with the error that stops it from being parsed (too large: told
    from its size alone where the source can; unreadable)."""
    size_of = getattr(source, "size", None)
    fits = getattr(source, "fits", None)  # a source that vouches for a small file without even its size
    try:
        # Refuse an oversized file from its size alone when the source can tell it without reading.
        too_big = (check_size(path, size_of(path), max_bytes)
                   if size_of is not None and not (fits is not None and fits(path, max_bytes)) else None)
        if too_big is not None:
            return FileResult(path, blob_id, diagnostics=[too_big])
        return source.read(path)
    except OSError as exc:
        return FileResult(path, blob_id, diagnostics=[error(f"cannot read file: {exc.strerror or exc}", path)])


_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]|^\\\\")


def read_member(source: Source, base_file: str, rel: str) -> tuple[str | None, Diagnostic | None]:
    """Resolve bundle member `rel` against the folder of `base_file`: the normalised
    repo-relative path, or an error (placed in `base_file`) saying why not."""
    if not isinstance(rel, str) or not rel.strip():
        return None, error("bundle member file name is empty", base_file,
                           hint="give the member's path relative to the bundle file")
    if rel.startswith("/") or _WINDOWS_ABSOLUTE.match(rel):
        return None, error(f"bundle member '{rel}' is an absolute path", base_file,
                           hint="give the member's path relative to the bundle file")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(base_file), rel))
    if resolved == ".." or resolved.startswith("../"):
        return None, error(f"bundle member '{rel}' resolves outside the repository", base_file,
                           hint="bundle members must be files inside the repository")
    if resolved == "." or not source.exists(resolved):
        return None, error(f"bundle member file '{rel}' does not exist (looked for {resolved})", base_file,
                           hint="check the path; it is relative to the bundle file's folder")
    return resolved, None
