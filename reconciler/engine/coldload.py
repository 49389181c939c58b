"""A cold load on every core: files nobody parsed before are read, parsed and validated by forked workers.

A first `validate` or `plan` of a large repository parses and validates every file (10,000 files:
~2 s of CPU in one process). Both steps are pure functions of a file's bytes, so the files missing
from the document cache are shared out between this process and `workers - 1` forked children, in
chunks taken from a common queue (a process slowed by other work takes fewer). Each child reads, parses
and validates its chunks, writes them to the document cache itself, and hands the results back as
marshalled plain data through a temporary file, chunk by chunk; this process does its own chunks
meanwhile, then takes the children's results as cache hits. The resolver then finds every file parsed
and every document validated.

Only where forking is safe and worth it: a POSIX system, more than one CPU, no other thread running
(a forked child of a threaded process may inherit a held lock; the daemon has threads and loads
warm), and many files to do. Otherwise, or when a child fails, the usual sequential load runs.
"""
from __future__ import annotations

import marshal
import os
import struct
import tempfile
from pathlib import Path

from reconciler.core.loader import LoadResult, gc_paused, load, select_files
from reconciler.core.yamlload import DEFAULT_MAX_BYTES
from reconciler.store.writebehind import can_fork

# below this many files to parse, forking costs more than it saves
MIN_FILES = 1500


def workers_available() -> int:
    if not can_fork():  # also off with RECONCILER_NO_FORK=1
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
    chunks = _chunks(missing, workers)
    # the work queue: every chunk's number in a pipe, written before forking; each process reads the next
    # number (a 4-byte read from a pipe is not split between readers) until none is left, so a process
    # slowed by the other work on the machine takes fewer chunks instead of holding everyone up
    queue_r, queue_w = os.pipe()
    try:
        os.write(queue_w, b"".join(struct.pack("<I", i) for i in range(len(chunks))))
    finally:
        os.close(queue_w)
    children = []
    try:
        for _ in range(workers - 1):
            out = tempfile.TemporaryFile(prefix="reconciler-load-")
            pid = os.fork()
            if pid == 0:  # the child: never returns
                _child(source, chunks, queue_r, state_dir, out)
            children.append((pid, out))
        # this process's own chunks, straight into the cache like any parse (and validated into its memo)
        with gc_paused():
            for index in _taken(queue_r):
                _put(cache, _work(source, chunks[index]), new=True)
    finally:
        os.close(queue_r)
    cache.save(behind=True)  # written by a child of its own while this process takes the workers' results
    for pid, out in children:
        os.waitpid(pid, 0)
        # whatever chunks a worker finished are used, also when it failed later; the load that follows
        # parses any file still missing (a failed worker's unfinished chunk) here
        out.seek(0)
        with gc_paused():
            for stored, items in _records(out):
                _put(cache, items, new=not stored)
        out.close()


def _chunks(missing: list[tuple[str, str]], workers: int) -> list[list[tuple[str, str]]]:
    """Chunks small enough to even out the processes' ends, and at most 1,000 (their numbers fit a pipe)."""
    size = max(16, -(-len(missing) // 1000), len(missing) // (workers * 48))
    return [missing[i:i + size] for i in range(0, len(missing), size)]


def _taken(queue_r: int):
    """The numbers of the chunks this process takes from the work queue, until it is empty."""
    while True:
        raw = os.read(queue_r, 4)
        if len(raw) < 4:
            return
        yield struct.unpack("<I", raw)[0]


def _child(source, chunks, queue_r: int, state_dir: Path, out) -> None:
    """A worker: takes chunks from the queue; each chunk's results go to the cache (its own connection:
    a SQLite connection must not cross a fork) and, framed, to `out` for the parent, chunk by chunk."""
    code = 1
    try:
        import gc

        gc.disable()  # a short-lived process that frees nothing
        from reconciler.store.doccache import DocCache

        cache = DocCache(state_dir)
        for index in _taken(queue_r):
            items = list(_work(source, chunks[index]))
            _put(cache, items, new=True)
            data = marshal.dumps((cache.save(), items))
            out.write(struct.pack("<Q", len(data)) + data)
        out.flush()
        code = 0
    except BaseException:  # noqa: BLE001  the parent parses what this worker did not finish
        code = 1
    finally:
        os._exit(code)


def _records(out):
    """The (stored, items) records a worker wrote, up to the first incomplete one (a worker that died)."""
    while True:
        head = out.read(8)
        if len(head) < 8:
            return
        size = struct.unpack("<Q", head)[0]
        data = out.read(size)
        if len(data) < size:
            return
        try:
            yield marshal.loads(data)
        except (ValueError, EOFError, TypeError):
            return


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
