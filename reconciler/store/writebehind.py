"""The end of a one-shot command: cache writes taken off its critical path, and no teardown.

A cold `plan` of a large repository leaves caches for the next process: the parsed documents (~0.2 s
at 10,000 files), the resolver's snapshot (~0.1 s) and the plan memo (~0.1 s). None of them is read
again by the command that writes it, so in a one-shot command (below) `write_behind(fn, cache_dir)`
only queues `fn`, and `finish()` runs the queue in one forked child once the command's output is out,
while the command itself exits at once. The child is detached (a session of its own, /dev/null for
its standard streams, so a pipe reading the command's output ends with the command), and holds a
shared lock on `CACHE_DIR/.writers.lock` from before the command exits until its last write:
`wait_for_writers(cache_dir)`, which every reader of a cache calls before its first read, waits for
that lock to go (up to WAIT_FOR_WRITERS seconds), so the next command finds every cache as complete as
if the writes had been made in line. A child whose state directory was removed meanwhile (its lock
file no longer the one at that path) writes nothing, and never creates a directory.

Forking late is also what makes this cheaper than writing in a child forked at once: after a fork,
every page the parent touches again is copied (~1.5 ms per MB on the machines measured), and the
command touches most of its heap while it links, diffs and reports; a child forked as the parent
leaves costs the parent nothing of that. Measured at 10,000 artefacts, cold `plan` 1.60 -> 1.47 s and
cold `validate` 1.39 -> 1.29 s (README.md, Speed).

Only where forking is safe: a POSIX system and no other Python thread (a child of a threaded process
may inherit a lock some other thread held). Everywhere else (apply, the daemon, a library caller) the
same writes happen in line; `settle()` also runs whatever is queued, in line. A child writes through
connections and files of its own, never one it inherited, and leaves with `os._exit` (no atexit
handlers, no buffered output flushed twice). A child that fails loses only a cache entry.

A read-only command (`validate`, `plan`) also ends without freeing what it built: a 10,000-file
resolve is millions of objects, and freeing them one by one took ~0.13 s after the report was out,
plus ~0.06 s of interpreter teardown. Such a command marks itself `one_shot()`, its loader `retain()`s
the big structures (so they are not freed when the command returns), and `finish(code)` flushes the
output and leaves with `os._exit` when no other thread runs. Commands that write state (apply, delete,
the daemon) end as usual: their connections close and checkpoint.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable

_children: list[int] = []
_one_shot = False
_retained: list[object] = []
_queued: list[tuple[Callable[[], object], Path]] = []  # write_behind's, for finish() (or settle())
_detached = False  # True in finish()'s writer child
_waited: set[str] = set()  # cache dirs whose earlier writers this process waited for

LOCK_NAME = ".writers.lock"
WAIT_FOR_WRITERS = 10.0  # seconds a reader waits for an earlier command's writer; then reads as it is


def one_shot() -> None:
    """This process runs one read-only command and ends with finish(): what it retains is never freed."""
    global _one_shot
    _one_shot = True


def retain(obj: object) -> None:
    """Keep `obj` alive until a one-shot process ends (it is then not freed at all); elsewhere a no-op."""
    if _one_shot:
        _retained.append(obj)


def finish(code: int) -> None:
    """The end of a CLI process: its output flushed, its queued writes handed to a detached child, its
    forked workers waited for; a one-shot process then leaves at once."""
    if not (_one_shot and threading.active_count() == 1):
        settle()
        return
    import sys

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    _detach()
    settle()
    os._exit(code)


def can_fork() -> bool:
    """Forking is safe here: POSIX, no other Python thread, not turned off by RECONCILER_NO_FORK=1."""
    return hasattr(os, "fork") and threading.active_count() == 1 and not os.environ.get("RECONCILER_NO_FORK")


def writes_behind() -> bool:
    """Writes are queued for after the command: only in a one-shot command, which ends with finish()."""
    return _one_shot and can_fork()


def detached() -> bool:
    """This process outlives its command (finish()'s writer child, or a cold load's worker writing its share):
    it must not create directories (its state dir may be gone), and it may wait longer for a database another
    such child is writing, since nobody waits for it."""
    return _detached


def write_behind(fn: Callable[[], object], cache_dir: Path) -> bool:
    """Queue fn() (a write under `cache_dir`) for the end of a one-shot command where forking is safe
    (True), else run it here and now (False)."""
    if not writes_behind():
        fn()
        return False
    _queued.append((fn, Path(cache_dir)))
    return True


def adopt(pid: int) -> None:
    """Wait for the forked child `pid` (which writes a cache) when this one-shot command ends; outside one
    (writes_behind() is False) wait for it now."""
    _children.append(pid)
    if not writes_behind():
        settle()


def pending() -> int:
    return len(_children) + len(_queued)


def settle() -> None:
    """Run every queued write here, and wait for every forked child of this process."""
    while _queued:
        _quietly(_queued.pop(0)[0])
    while _children:
        pid = _children.pop()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # reaped already (e.g. by a SIGCHLD handler)
            pass


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001  a cache not written is only a slower next command
        pass


def wait_for_writers(cache_dir: Path, timeout: float = WAIT_FOR_WRITERS) -> None:
    """Wait until no earlier command's writer child holds `cache_dir`'s lock (once per process and
    directory; at most `timeout` seconds, then the caches are read as they are)."""
    key = str(cache_dir)
    if key in _waited or _detached:
        return
    _waited.add(key)
    wait_until_written(cache_dir, timeout)


def wait_until_written(cache_dir: Path, timeout: float = WAIT_FOR_WRITERS) -> None:
    """Wait until no process holds `cache_dir`'s writers lock, every time it is asked (at most `timeout`
    seconds). `wait_for_writers` is this once per process; the benchmarks call it before each timed run."""
    try:
        fd = os.open(os.path.join(str(cache_dir), LOCK_NAME), os.O_RDONLY)
    except OSError:  # no lock file: no writer ever ran here
        return
    try:
        import fcntl
        import time

        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return  # released with the descriptor below
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return
                time.sleep(0.005)
            except OSError:  # locks not supported here: nothing to wait for
                return
    finally:
        os.close(fd)


def _detach() -> None:
    """Hand the queued writes to a forked child that outlives this process (see the module's text)."""
    if not _queued:
        return
    locks = {}
    for _, cache_dir in _queued:
        if cache_dir not in locks:
            locks[cache_dir] = hold_for_writes(cache_dir)
    try:
        pid = os.fork()
    except OSError:  # no memory or process slots for a child: write in line
        pid = None
    if pid == 0:  # the child: never returns
        _write_detached(locks)
    for fd in locks.values():
        if fd is not None:
            os.close(fd)  # the child's copies keep the locks
    if pid is None:
        settle()
    else:
        # handed over; what the writes would have written stays referenced until the process leaves with
        # os._exit: dropping the last references here freed the parsed repository one object at a time
        # (~45 ms of a 10,000-file cold plan, after its output was out but before it exited)
        _retained.append(list(_queued))
        _queued.clear()


def hold_for_writes(cache_dir: Path) -> int | None:
    """`cache_dir`'s writers lock file, open and shared-locked; None where it cannot be made (a read-only
    state dir: the writes would fail too). On a file system without locks it is open but not locked: the
    caches are still written, and a next command does not wait for them. Taken while the command runs by
    whoever writes after it (the detached writer, a cold load's worker: pair with `leave_terminal` and
    `still_there`), and released when that process exits."""
    try:
        import fcntl

        os.makedirs(cache_dir, exist_ok=True)  # here, by the command: the writer child makes no directory
        fd = os.open(os.path.join(cache_dir, LOCK_NAME), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    except OSError:
        pass
    return fd


def still_there(cache_dir: Path, fd: int | None) -> bool:
    """The lock file held is still the one at its path: the state dir was not removed or replaced."""
    if fd is None:
        return False
    try:
        held = os.fstat(fd)
        return held.st_nlink > 0 and os.stat(os.path.join(cache_dir, LOCK_NAME)).st_ino == held.st_ino
    except OSError:
        return False


def leave_terminal() -> None:
    """In a child that outlives its command: no terminal's signals, and /dev/null for its standard streams (a
    pipe reading the command's output ends with the command; the shell does not wait for the child). It is
    `detached()` from then on."""
    global _detached
    _detached = True
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for stream in (0, 1, 2):
        os.dup2(null, stream)


def _write_detached(locks: dict) -> None:
    code = 1
    try:
        leave_terminal()
        import gc

        gc.disable()  # short-lived: freeing nothing beats scanning a copy of the parent's heap
        for fn, cache_dir in _queued:
            if still_there(cache_dir, locks.get(cache_dir)):
                _quietly(fn)
        code = 0
    finally:
        os._exit(code)
