"""The end of a one-shot command: cache writes taken off its critical path, and no teardown.

A cold `plan` of a large repository ends with a single-threaded tail (linking, the access diff, the
report) while the machine's other cores idle, and part of that tail was writing caches for the next
process: the parsed documents (~0.2 s at 10,000 files) and the resolver's snapshot (~0.1 s). Neither
is read again by the command that writes it, so `write_behind(fn)` runs
`fn` in a forked child (a copy of this process's memory as it is now) while this process goes on;
`settle()` waits for every such child, and the CLI calls it before it exits: when a command has
returned, its caches are written, as before. (The plan memo stays in line: a fork's copy-on-write
faults, ~1.5 ms per MB touched afterwards on the machines measured, cost more than writing it.)

Only in a one-shot command (below) and where forking is safe: a POSIX system and no other Python
thread (a child of a threaded process may inherit a lock some other thread held). Everywhere else
(apply, the daemon, a library caller) the same writes happen in line, as before. A child writes
through connections and files of its own, never one it inherited, and leaves with `os._exit` (no
atexit handlers, no buffered output flushed twice). A child that fails loses only a cache entry.

A read-only command (`validate`, `plan`) also ends without freeing what it built: a 10,000-file
resolve is millions of objects, and freeing them one by one took ~0.13 s after the report was out,
plus ~0.06 s of interpreter teardown. Such a command marks itself `one_shot()`, its loader `retain()`s
the big structures (so they are not freed when the command returns), and `finish(code)` flushes the
output, waits for the children and leaves with `os._exit` when no other thread runs. Commands that
write state (apply, delete, the daemon) end as usual: their connections close and checkpoint.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

_children: list[int] = []
_one_shot = False
_retained: list[object] = []


def one_shot() -> None:
    """This process runs one read-only command and ends with finish(): what it retains is never freed."""
    global _one_shot
    _one_shot = True


def retain(obj: object) -> None:
    """Keep `obj` alive until a one-shot process ends (it is then not freed at all); elsewhere a no-op."""
    if _one_shot:
        _retained.append(obj)


def finish(code: int) -> None:
    """The end of a CLI process: every write-behind child waited for; a one-shot process leaves at once."""
    settle()
    if _one_shot and threading.active_count() == 1:
        import sys

        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe: nothing more can reach it
                pass
        os._exit(code)


def can_fork() -> bool:
    """Forking is safe here: POSIX, no other Python thread, not turned off by RECONCILER_NO_FORK=1."""
    return hasattr(os, "fork") and threading.active_count() == 1 and not os.environ.get("RECONCILER_NO_FORK")


def writes_behind() -> bool:
    """Writes go to forked children: only in a one-shot command, whose end waits for them (finish)."""
    return _one_shot and can_fork()


def write_behind(fn: Callable[[], object], in_line: bool = True) -> bool:
    """fn() in a forked child in a one-shot command where forking is safe (True), else here and now (False;
    `in_line=False`: not at all)."""
    if not writes_behind():
        if in_line:
            fn()
        return False
    try:
        pid = os.fork()
    except OSError:  # no memory or process slots left for a child: write in line
        if in_line:
            fn()
        return False
    if pid == 0:  # the child: never returns
        code = 1
        try:
            import gc

            gc.disable()  # short-lived: freeing nothing beats scanning a copy of the parent's heap
            fn()
            code = 0
        except BaseException:  # noqa: BLE001  a cache not written is only a slower next command
            code = 1
        finally:
            os._exit(code)
    _children.append(pid)
    return True


def adopt(pid: int) -> None:
    """Wait for the forked child `pid` (which writes a cache) when this one-shot command ends, as for a
    write_behind child; outside one (writes_behind() is False) wait for it now."""
    _children.append(pid)
    if not writes_behind():
        settle()


def pending() -> int:
    return len(_children)


def settle() -> None:
    """Wait for every write-behind child of this process."""
    while _children:
        pid = _children.pop()
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:  # reaped already (e.g. by a SIGCHLD handler)
            pass
