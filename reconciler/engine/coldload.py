"""A cold load on every core: files nobody parsed before are read, parsed and validated by forked workers.

A first `validate` or `plan` of a large repository parses and validates every file (10,000 files:
~2 s of CPU in one process). Both steps are pure functions of a file's bytes, so the files missing
from the document cache are split between this process and `workers - 1` forked children. Each
child reads, parses and validates its share, writes it to the document cache itself, and hands the
results back as marshalled plain data through a temporary file; this process does its own share
meanwhile, then takes the children's results as cache hits. The resolver then finds every file parsed
and every document validated.

Only where forking is safe and worth it: a POSIX system, more than one CPU, no other thread running
(a forked child of a threaded process may inherit a held lock; the daemon has threads and loads
warm), and many files to do. Otherwise, or when a child fails, the usual sequential load runs.
"""
from __future__ import annotations

import marshal
import os
import tempfile
import threading
from pathlib import Path

from reconciler.core.loader import LoadResult, gc_paused, load, select_files
from reconciler.core.yamlload import DEFAULT_MAX_BYTES

# below this many files to parse, forking costs more than it saves
MIN_FILES = 1500


def workers_available() -> int:
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, min(os.cpu_count() or 1, 8))


def load_cold(source, paths, cache, state_dir: Path, workers: int | None = None) -> LoadResult:
    """`loader.load(source, paths, cache)`, with the files missing from `cache` done by `workers` processes."""
    workers = workers_available() if workers is None else workers
    if workers > 1:
        selected = select_files(source, paths)
        cache.prefetch([blob for _, blob in selected])
        missing = [(path, blob) for path, blob in selected if not cache.has(blob)]
        if len(missing) >= MIN_FILES and cache.ready_for_writers():
            _fill(source, missing, cache, state_dir, workers)
    return load(source, paths, cache=cache)


def _fill(source, missing: list[tuple[str, str]], cache, state_dir: Path, workers: int) -> None:
    shares = [missing[i::workers] for i in range(workers)]
    children = []
    for share in shares[1:]:
        out = tempfile.TemporaryFile(prefix="reconciler-load-")
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _child(source, share, state_dir, out)
        children.append((pid, out, share))
    # this process's own share, straight into the cache like any parse (and validated into its memo)
    with gc_paused():
        _put(cache, _work(source, shares[0]), new=True)
    cache.save()  # this share's entries are written while the children still work, not after
    for pid, out, share in children:
        _, status = os.waitpid(pid, 0)
        results = None
        if os.waitstatus_to_exitcode(status) == 0:
            out.seek(0)
            try:
                with gc_paused():
                    results = marshal.loads(out.read())
            except (ValueError, EOFError, TypeError):
                results = None
        out.close()
        if results is None:  # the child failed: its share is loaded here, as usual
            continue
        stored, items = results
        with gc_paused():
            _put(cache, items, new=not stored)


def _child(source, share, state_dir: Path, out) -> None:
    code = 1
    try:
        import gc

        gc.disable()  # a short-lived process that frees nothing
        from reconciler.store.doccache import DocCache

        items = list(_work(source, share))
        cache = DocCache(state_dir)  # its own connection: a SQLite connection must not cross a fork
        _put(cache, items, new=True)
        stored = cache.save()
        out.write(marshal.dumps((stored, items)))
        out.flush()
        code = 0
    except BaseException:  # noqa: BLE001  the parent does this share itself
        code = 1
    finally:
        os._exit(code)


def _put(cache, items, new: bool) -> None:
    """Work results into `cache`; `new=False`: another process has stored them already."""
    for _, blob, entry, validated in items:
        cache.put_entry(blob, entry, new=new)
        for key, v in validated:
            cache.put_validated_entry(key, v, new=new)


def _work(source, share):
    """(path, blob, cache entry, [(memo key, validated data)]) of each file, as plain data."""
    from reconciler.core.loader import load_file
    from reconciler.core.policy_checks import filter_problem
    from reconciler.core.resolve import filter_key, validate
    from reconciler.store.doccache import entry_of, validated_to_data

    for path, blob in share:
        result = load_file(source, path, blob, None, DEFAULT_MAX_BYTES)
        validated = []
        if not result.broken:
            for doc in result.documents:
                if doc.is_artefact:
                    v = validate(doc.data)
                    validated.append(((blob, doc.index), validated_to_data(v)))
                    filter_text = _row_filter(v.spec)
                    if filter_text is not None:  # checked here too: the resolver then needs no SQL parser
                        validated.append((filter_key(filter_text), validated_to_data(filter_problem(filter_text) or "")))
        yield path, blob, entry_of(result), validated


def _row_filter(spec: dict | None) -> str | None:
    if not spec or spec.get("type") != "policy":
        return None
    text = (spec.get("policy") or {}).get("filter")
    return text if isinstance(text, str) else None
