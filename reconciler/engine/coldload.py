"""A cold load on every core: files nobody parsed before are read, parsed and validated by forked workers.

A first `validate` or `plan` of a large repository parses and validates every file (10,000 files:
~2 s of CPU in one process). Both steps are pure functions of a file's bytes, so the files missing
from the document cache are shared out between this process and `workers - 1` forked children, in
chunks taken from a common queue (a process slowed by other work takes fewer). Each child reads, parses
and validates its chunks and hands the results back as marshalled plain data through a temporary file,
chunk by chunk; this process does its own chunks meanwhile and, between them, takes the children's
finished chunks as cache hits. Once the queue is empty a child writes its results to the document cache
itself, while this process goes on linking: in a one-shot command holding the cache's writers lock, so
that the command may exit before that write ends (the next command's readers wait for the lock); else the
command's end waits for it. The resolver then finds every file parsed and every document validated.

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

from reconciler.core.limits import DEFAULT_MAX_BYTES
from reconciler.core.loader import LoadResult, gc_paused, load, select_files
from reconciler.store.writebehind import adopt, can_fork, wait_for_writers, writes_behind

# below this many files to parse, forking costs more than it saves
MIN_FILES = 1500


def workers_available() -> int:
    if not can_fork():  # also off with RECONCILER_NO_FORK=1
        return 1
    try:
        return max(1, min(len(os.sched_getaffinity(0)), 8))
    except AttributeError:  # pragma: no cover (not Linux)
        return max(1, min(os.cpu_count() or 1, 8))


def load_cold(source, paths, cache, state_dir: Path, workers: int | None = None, side=None) -> LoadResult:
    """`loader.load(source, paths, cache)`, with the files missing from `cache` done by `workers` processes.

    `side`: work for the worker once its share is done (see SideJob), when there is exactly one worker;
    `side.started` says whether it was handed over."""
    workers = workers_available() if workers is None else workers
    selected = None
    if workers > 1:
        selected = select_files(source, paths)
        cache.prefetch([blob for _, blob in selected])
        missing = [(path, blob) for path, blob in selected if not cache.has(blob)]
        if len(missing) >= MIN_FILES and cache.ready_for_writers():
            _fill(source, missing, cache, state_dir, workers, side if workers == 2 else None)
    return load(source, paths, cache=cache, selected=selected)


class SideJob:
    """Work a cold load's worker does with the validation results of the whole repository once its own share
    is done, on the core this process's serial rest (linking, planning) leaves idle.

    `collect(path, index, validated)` is called in both processes for each validated document of their own
    share (`validated` is a Validated in this process, its stored form in the worker) and returns plain data
    or None; this process sends what it collected to the worker, which calls `run(its own + ours)` and
    writes the (marshallable) answer back. `answer()` in this process waits for it: None when the worker
    failed or was never started. The caller must check that the answer fits what it resolved."""

    started = False

    def collect(self, path: str, index: int, validated) -> object | None:  # pragma: no cover (abstract)
        raise NotImplementedError

    def run(self, items: list) -> object:  # pragma: no cover (abstract)
        raise NotImplementedError

    def resolver_hook(self):
        """What the resolver of this load takes from this job (Resolver.policies_ahead), or None."""
        return None

    def _begin(self) -> None:
        self._mine: list = []
        self._in = tempfile.TemporaryFile(prefix="reconciler-side-in-")
        self._out = tempfile.TemporaryFile(prefix="reconciler-side-out-")
        self._go_r, self._go_w = os.pipe()  # this process -> the worker: our items are in _in
        self._done_r, self._done_w = os.pipe()  # the worker -> this process: the answer is in _out

    def _add_all(self, path: str, validated: list) -> None:
        """The (memo key, result) pairs `_work` made of one file: each document's through `collect` (the
        policy filter verdicts beside them have keys of their own)."""
        for key, v in validated:
            if type(key) is tuple:
                item = self.collect(path, key[1], v)
                if item is not None:
                    self._mine.append(item)

    def _hand_over(self) -> None:
        """In this process, after its own share: our items to the worker."""
        try:
            self._in.write(marshal.dumps(self._mine))
            self._in.flush()
            os.write(self._go_w, b".")
            self.started = True
        except (OSError, ValueError):  # not plain data, a full disk: the caller does the work itself
            pass
        finally:
            os.close(self._go_w)
            os.close(self._go_r)
            os.close(self._done_w)
            self._mine = []

    def _in_worker(self) -> None:
        """In the worker, after its own share: wait for this process's items, run, write the answer."""
        os.close(self._go_w)
        os.close(self._done_r)
        try:
            if os.read(self._go_r, 1) != b".":
                return  # this process did not hand over (it failed, or gave up)
            self._in.seek(0)
            answer = self.run(self._mine + marshal.loads(self._in.read()))
            self._out.write(marshal.dumps(answer))
            self._out.flush()
            os.write(self._done_w, b".")
        except Exception:  # noqa: BLE001  this process does the work itself when no answer comes
            pass
        finally:
            os.close(self._done_w)

    def answer(self):
        """The worker's answer (waiting for it), or None."""
        if not self.started:
            return None
        self.started = False
        try:
            if os.read(self._done_r, 1) != b".":
                return None
            self._out.seek(0)
            return marshal.loads(self._out.read())
        except (OSError, ValueError, EOFError, TypeError):
            return None
        finally:
            os.close(self._done_r)
            self._out.close()
            self._in.close()


def valid_parts(validated) -> tuple | None:
    """(spec, hash, refs, identity) of a valid document's validation result, in either form a side job's `collect`
    sees it (a Validated in this process, its stored form in the worker; refs iterate as (kind, target, path)
    either way); None for an invalid document or a policy filter's verdict."""
    if type(validated) is str:  # a policy filter's verdict, remembered beside the documents
        return None
    if type(validated) is tuple:  # the worker's stored form (store/doccache.py validated_to_data)
        if validated[0] != "V":
            return None
        _, spec, hash_, refs, _, diags, identity = validated
        failed = any(d[0] == "error" for d in diags)
    else:
        spec, hash_, refs, identity = validated.spec, validated.hash, validated.refs, validated.identity
        failed = any(d.is_error for d in validated.diagnostics)
    if spec is None or failed or identity is None:
        return None
    return spec, hash_, refs, identity


class SideJobs(SideJob):
    """Several side jobs, which the worker does one after another in this order: the one whose answer this
    process needs first goes first."""

    def __init__(self, *jobs: SideJob):
        self.jobs = jobs

    @property
    def started(self) -> bool:
        return any(job.started for job in self.jobs)

    def _begin(self) -> None:
        for job in self.jobs:
            job._begin()

    def _add_all(self, path: str, validated: list) -> None:
        for job in self.jobs:
            job._add_all(path, validated)

    def _hand_over(self) -> None:
        for job in self.jobs:
            job._hand_over()

    def _in_worker(self) -> None:
        for job in self.jobs:
            job._in_worker()

    def resolver_hook(self):
        return next((hook for job in self.jobs if job.started and (hook := job.resolver_hook())), None)


def _fill(source, missing: list[tuple[str, str]], cache, state_dir: Path, workers: int, side=None) -> None:
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
    if side is not None:
        side._begin()
    # in a one-shot command a worker's cache writes outlive it (see _child): a reader in this process would
    # wait for them, and it has waited for earlier commands' writers already (this makes sure it has)
    detach = writes_behind()
    wait_for_writers(Path(state_dir) / "cache")
    try:
        for _ in range(workers - 1):
            out = tempfile.TemporaryFile(prefix="reconciler-load-")
            done_r, done_w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: never returns
                os.close(done_r)
                _child(source, chunks, queue_r, state_dir, out, done_w, side, detach)
            os.close(done_w)
            children.append((pid, _Results(out), done_r))
        # this process's own chunks, straight into the cache like any parse (and validated into its memo);
        # after each, the workers' chunks finished meanwhile: taken here while they work, they are not
        # left to the end, where this process's serial rest (linking, planning) keeps a worker idle
        with gc_paused():
            for index in _taken(queue_r):
                for path, blob, result, validated in _work(source, chunks[index], stored_form=False):
                    cache.put(blob, result)  # kept whole: the load that follows takes it as it is
                    for key, v in validated:
                        cache.put_validated(key, v)
                    if side is not None:
                        side._add_all(path, validated)
                for _, results, _ in children:
                    results.take_ready(cache)
    finally:
        os.close(queue_r)
        if side is not None:
            side._hand_over()
    cache.save(behind=True)  # written by a child of its own while this process takes the workers' results
    for pid, results, done_r in children:
        # a worker says it is done (or dies: end of file) once its results are all in `out`; it writes its
        # share of the cache only then, on a core this process's serial rest leaves idle: in a one-shot
        # command while holding the cache's writers lock, so that it may finish after this process exits,
        # as the detached writer does (store/writebehind.py); elsewhere this process waits for it
        try:
            os.read(done_r, 1)
        finally:
            os.close(done_r)
        # whatever chunks a worker finished are used, also when it failed later; the load that follows
        # parses any file still missing (a failed worker's unfinished chunk) here
        with gc_paused():
            results.take_ready(cache)
        results.close()
        if not detach:
            adopt(pid)


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


def _child(source, chunks, queue_r: int, state_dir: Path, out, done_w: int, side=None,
           detach: bool = False) -> None:
    """A worker: takes chunks from the queue; each chunk's results go, framed, to `out` for the parent,
    chunk by chunk. With the queue empty it tells the parent (`done_w`), does the `side` job if there is one,
    and only then writes them to the cache (its own connection: a SQLite connection must not cross a fork),
    while the parent goes on. `detach`: the parent does not wait for that write; the worker holds the cache's
    writers lock from before it says it is done, and leaves the terminal (writebehind.leave_terminal)."""
    code = 1
    try:
        import gc

        gc.disable()  # a short-lived process that frees nothing
        from reconciler.store.doccache import DocCache
        from reconciler.store.writebehind import hold_for_writes, leave_terminal, still_there

        cache = DocCache(state_dir)
        for index in _taken(queue_r):
            items = list(_work(source, chunks[index]))
            _send(cache, items, out, stored=True)
            if side is not None:
                for path, _, _, validated in items:
                    side._add_all(path, validated)
        out.flush()
        cache_dir = Path(state_dir) / "cache"
        lock = hold_for_writes(cache_dir) if detach else None
        os.write(done_w, b".")
        os.close(done_w)
        if side is not None:
            side._in_worker()  # its answer is what the parent waits for last: before the cache
        if detach:
            leave_terminal()
        if not detach or still_there(cache_dir, lock):  # else the state dir was removed: nothing to write
            cache.save()
        code = 0
    except BaseException:  # noqa: BLE001  the parent parses what this worker did not finish
        code = 1
    finally:
        os._exit(code)


def _send(cache, items, out, stored: bool | None = None) -> None:
    """A child's work results: into its cache, and framed into `out` for the parent (see _Results).
    `stored`: the child writes them to the cache file later (else now, and says whether it did)."""
    _put(cache, items, new=True, build=False)
    data = marshal.dumps((cache.save() if stored is None else stored, items))
    out.write(struct.pack("<Q", len(data)) + data)
    out.flush()  # the parent may take it while this child goes on


def _take(cache, out) -> None:
    """What a child sent to `out` (and has finished writing), into `cache`; `out` is closed."""
    results = _Results(out)
    results.take_ready(cache)
    results.close()


class _Results:
    """The (stored, items) records a child writes to `out`, framed by their length, taken into a cache as they
    become complete, up to the first that is not (yet: the child is writing it; or ever: it died).

    Read with pread: since the fork this process shares the file's offset with the child, which writes at it."""

    def __init__(self, out):
        self.out = out
        self.pos = 0
        self.bad = False  # a record that is complete but does not load: nothing after it is taken

    def take_ready(self, cache) -> None:
        fd = self.out.fileno()
        while not self.bad:
            head = os.pread(fd, 8, self.pos)
            if len(head) < 8:
                return
            size = struct.unpack("<Q", head)[0]
            data = os.pread(fd, size, self.pos + 8)
            if len(data) < size:
                return
            try:
                stored, items = marshal.loads(data)
            except (ValueError, EOFError, TypeError):
                self.bad = True
                return
            self.pos += 8 + size
            _put(cache, items, new=not stored, build=True)

    def close(self) -> None:
        self.out.close()


def _put(cache, items, new: bool, build: bool) -> None:
    """Work results into `cache`; `new=False`: another process has stored them already. `build`: each
    file's FileResult is made now (in the parallel phase, when a worker's results are taken while it works),
    not by the load that follows."""
    for _, blob, entry, validated in items:
        cache.put_entry(blob, entry, new=new, build=build)
        for key, v in validated:
            cache.put_validated_entry(key, v, new=new)


def _work(source, share, stored_form: bool = True):
    """(path, blob, cache entry, [(memo key, validated data)]) of each file, as plain data (`stored_form`:
    for another process; else the FileResult in place of its entry, and the validation results stay
    `Validated` objects, for this one).

    In stages over the whole share: every file read, then every one parsed (`load_files`), then every
    document validated (`validate_many`), each stage's code and data kept in the CPU's caches: 15-30 % less
    CPU than reading, parsing and validating one file after another (bench repository, one process)."""
    from reconciler.core.loader import load_files
    from reconciler.core.resolve import filter_key, validate_many
    from reconciler.store.doccache import entry_of, validated_to_data

    to_data = validated_to_data if stored_form else _same
    results = load_files(source, share, DEFAULT_MAX_BYTES)
    artefacts = [doc for result in results if not result.broken for doc in result.documents if doc.is_artefact]
    checked = iter(validate_many([doc.data for doc in artefacts]))
    for result in results:
        validated = []
        if not result.broken:
            for doc in result.documents:
                if doc.is_artefact:
                    v = next(checked)
                    validated.append(((result.blob_id, doc.index), to_data(v)))
                    filter_text = _row_filter(v.spec)
                    if filter_text is not None:  # checked here too: the resolver then needs no SQL parser
                        from reconciler.core.policy_checks import filter_problem  # ~15 ms: only with a filter

                        validated.append((filter_key(filter_text), to_data(filter_problem(filter_text) or "")))
        yield result.path, result.blob_id, entry_of(result) if stored_form else result, validated


def _same(value):
    return value


def _row_filter(spec: dict | None) -> str | None:
    if not spec or spec.get("type") != "policy":
        return None
    text = (spec.get("policy") or {}).get("filter")
    return text if isinstance(text, str) else None


class Helper:
    """A worker forked ahead of a warm `plan` or `validate`, so that the files a commit changed are
    validated on the other core while this process restores its snapshot and reads the recorded state.

    A one-file `plan` as a fresh process spent ~0.2 s importing pydantic and building models, only to
    validate the changed file; restoring the snapshot and reading the records take as long again and need
    no models. So `start` forks a child that imports the models and the parsers, each type's model too
    (`resources.preload`) until its work comes, while this process goes on; `validate(cache, share,
    source)` reads the changed files (path, blob) here, hands their bytes to it, waits until it says its
    results are written out, and takes them into `cache` as a cold load takes its workers' (this process
    never imports the models). The helper then writes them to the document cache file, holding the
    cache's writers lock, after the command if need be, as a cold load's worker does. A resolve that needs
    no help (nothing changed, or a full resolve) `dismiss`es it. Only in a one-shot command where forking
    is safe (store/writebehind.py), with a second CPU and a document cache to build on. Forking costs ~10 ms
    here. `plan` and `validate` fork it before they open the repository (its imports are the critical path
    of a one-file commit's plan or validate); a plan lets it go when its memo answers: session 14, 12
    alternating runs each, a one-file plan 0.221 -> 0.194 s with the parsers imported ahead and the cache
    written after, a plan answered from its memo 0.089 -> 0.094 s, a one-file validate then 0.197 -> 0.166 s
    from forking it earlier. (Sessions before saw no gain from forking it earlier alone.)"""

    def __init__(self, pid: int, share_w: int, out, done_r: int):
        self.pid, self._share_w, self._out, self._done_r = pid, share_w, out, done_r

    @classmethod
    def start(cls, source, state_dir: Path) -> "Helper | None":
        """`source`: the repository opened, or None when it is not yet (a helper forked before opening it, to
        import sooner: the caller dismisses it if the source turns out not to be a git commit)."""
        from reconciler.store.doccache import CACHE_FILE

        if not (writes_behind() and workers_available() > 1 and (source is None or cls._helps(source))
                and (Path(state_dir) / "cache" / CACHE_FILE).exists()):
            return None
        share_r, share_w = os.pipe()
        done_r, done_w = os.pipe()
        out = tempfile.TemporaryFile(prefix="reconciler-help-")
        try:
            pid = os.fork()
        except OSError:  # no memory or process slots for a child: validate here as usual
            for fd in (share_r, share_w, done_r, done_w):
                os.close(fd)
            out.close()
            return None
        if pid == 0:  # the child: never returns
            os.close(share_w)
            os.close(done_r)
            _helper_child(share_r, state_dir, out, done_w)
        os.close(share_r)
        os.close(done_w)
        return cls(pid, share_w, out, done_r)

    @staticmethod
    def _helps(source) -> bool:
        """A git commit: a working tree has no snapshot to build on, so nothing for a helper to validate."""
        return getattr(source, "tree", None) is not None

    def for_source(self, source) -> "Helper | None":
        """This helper, forked before `source` was opened, if it can help with it; else it is let go."""
        if self._helps(source):
            return self
        self.dismiss()
        return None

    def validate(self, cache, share: list[tuple[str, str]], source) -> None:
        """Parse and validate `share` in the helper; its results land in `cache` (what it did not finish, and
        files too large or unreadable, the caller parses and validates itself, as after any cache miss)."""
        from reconciler.core.loader import read_checked

        payload = []
        for path, blob in share:
            data = read_checked(source, path, blob, DEFAULT_MAX_BYTES)
            if isinstance(data, bytes):
                payload.append((path, blob, data))
        try:
            with os.fdopen(self._share_w, "wb") as pipe:
                self._share_w = None
                pipe.write(marshal.dumps(payload))
        except OSError:  # the helper is gone: nothing to take
            pass
        # the helper says it is done once its results are all in `out` (or dies: end of file); it writes them to
        # the document cache only then, holding the cache's writers lock, after this command if need be
        try:
            os.read(self._done_r, 1)
        finally:
            os.close(self._done_r)
            self._done_r = None
        self.pid = None  # detached: it is not waited for (store/writebehind.py)
        _take(cache, self._out)

    def dismiss(self) -> None:
        if self._share_w is not None:
            os.close(self._share_w)
            self._share_w = None
        if self._done_r is not None:
            os.close(self._done_r)
            self._done_r = None
        if self.pid is not None:
            import signal

            os.kill(self.pid, signal.SIGKILL)  # it may be importing: no need to wait for that
            os.waitpid(self.pid, 0)
            self.pid = None
            self._out.close()


class _Bytes:
    """The files a helper was handed, as the loader reads a source."""

    def __init__(self, data: dict[str, bytes]):
        self.data = data

    def read(self, path: str) -> bytes:
        return self.data[path]


def _helper_child(share_r: int, state_dir: Path, out, done_w: int) -> None:
    code = 1
    try:
        import gc

        gc.disable()  # a short-lived process that frees nothing
        # what any validation needs, imported while the parent opens the repository and restores its snapshot
        import select

        import reconciler.core.loader  # noqa: F401
        import reconciler.core.resolve  # noqa: F401
        from reconciler.core.resources import preload
        import reconciler.core.yamlload  # noqa: F401  (the parsers: load_files imports them late, ~10 ms)
        from reconciler.store.doccache import DocCache
        from reconciler.store.writebehind import hold_for_writes, leave_terminal, still_there

        # then each type's models, until the parent hands over the files (or lets this helper go)
        preload(lambda: bool(select.select([share_r], [], [], 0)[0]))
        with os.fdopen(share_r, "rb") as pipe:
            data = pipe.read()
        if data:  # nothing when the parent let it go
            payload = marshal.loads(data)
            files = _Bytes({path: content for path, _, content in payload})
            cache = DocCache(state_dir)
            _send(cache, list(_work(files, [(path, blob) for path, blob, _ in payload])), out, stored=True)
            # the parent takes the results now; the cache file is written after, as a cold load's worker does
            # (see _child): the next command's readers wait for the writers lock held from here
            cache_dir = Path(state_dir) / "cache"
            lock = hold_for_writes(cache_dir)
            os.write(done_w, b".")
            os.close(done_w)
            leave_terminal()
            if still_there(cache_dir, lock):  # else the state dir was removed: nothing to write
                cache.save()
        code = 0
    except BaseException:  # noqa: BLE001  the parent validates what this helper did not
        code = 1
    finally:
        os._exit(code)
