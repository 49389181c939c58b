"""Run a job's command as a subprocess tree that can always be stopped.

The command starts in a session of its own, so at the deadline or on cancel the
whole tree (the command and everything it spawned) is signalled as one process
group: SIGTERM first, SIGKILL for whatever is still alive 2 s later. Output lines
(stdout and stderr merged, in order) go to `log` as they are written.
"""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .base import JobContext, JobResult

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
_TICK = 0.05  # how often the deadline and the cancel flag are checked
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


@dataclass(frozen=True)
class ProcessOutcome:
    returncode: int | None  # None: the command could not be started
    timed_out: bool
    cancelled: bool
    seconds: float
    error: str | None = None  # why the command could not be started (also logged)


def run_process(cmd: list[str], *, cwd: Path, env: dict, log: Callable[[str], None],
                deadline: float | None, cancel: threading.Event) -> ProcessOutcome:
    """Run `cmd` to its end, its deadline (time.monotonic()) or `cancel`, whichever comes first."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace",
                                bufsize=1, start_new_session=True)
    except OSError as exc:
        error = _start_error(cmd, cwd, env, exc)
        log(error)
        return ProcessOutcome(None, False, False, time.monotonic() - start, error)

    reader = threading.Thread(target=_pump, args=(proc.stdout, log), name=f"output-{proc.pid}", daemon=True)
    reader.start()
    timed_out = cancelled = False
    while proc.poll() is None:
        if cancel.is_set():
            cancelled = True
        elif deadline is not None and time.monotonic() >= deadline:
            timed_out = True
        if timed_out or cancelled:
            log(f"{'cancelled' if cancelled else 'timed out'}: stopping process tree {proc.pid}")
            break
        wait = _TICK if deadline is None else max(0.0, min(_TICK, deadline - time.monotonic()))
        cancel.wait(wait)
    # the group id is the leader's pid (start_new_session); its members may outlive the leader
    _stop_group(proc, proc.pid)
    proc.wait()
    # the group is gone, so the pipe is at EOF once drained; only a process that left the group
    # (setsid) can keep it open, and that must not hang the job
    reader.join(10.0)
    return ProcessOutcome(proc.returncode, timed_out, cancelled, time.monotonic() - start)


def _pump(stream, log: Callable[[str], None]) -> None:
    with stream:
        for line in stream:
            try:
                log(line.rstrip("\r\n"))
            except Exception:  # a broken log sink must not leave the pipe full and the child blocked
                pass


def _start_error(cmd: list[str], cwd: Path, env: dict, exc: OSError) -> str:
    program = cmd[0] if cmd else "(empty command)"
    if exc.filename is not None and str(exc.filename) == str(cwd):
        return f"cannot run {program!r}: working directory {cwd} does not exist"
    if isinstance(exc, FileNotFoundError):
        where = "" if "/" in program else f" (searched PATH={env.get('PATH', '')})"
        return f"cannot run {program!r}: no such executable{where}"
    if isinstance(exc, PermissionError):
        return f"cannot run {program!r}: permission denied (is it executable?)"
    return f"cannot run {program!r}: {exc.strerror or exc}"


def _group_alive(pgid: int) -> bool:
    """Whether any process of the group still runs; zombies waiting for init to reap them do not count."""
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        try:
            os.killpg(pgid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # fields after "(comm)": state ppid pgrp ...; comm itself may contain spaces and parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] not in ("Z", "X"):
            return True
    return False


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_group(proc: subprocess.Popen, pgid: int) -> None:
    """SIGTERM the group, SIGKILL it if anything is left after KILL_GRACE; reaps the leader."""
    proc.poll()
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    give_up = time.monotonic() + KILL_GRACE
    while time.monotonic() < give_up:
        proc.poll()  # reap the leader so that it stops counting as a member
        if not _group_alive(pgid):
            return
        time.sleep(_TICK)
    _signal_group(pgid, signal.SIGKILL)


# ---- shared by the stacks that run a command -----------------------------------------------------

def base_env(ctx: JobContext) -> dict[str, str]:
    """The few variables every job command gets; nothing else of the daemon's environment leaks in."""
    source = ctx.environ or os.environ
    return {
        "PATH": source.get("PATH") or os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": source.get("HOME") or os.environ.get("HOME") or str(ctx.run_dir),
        "LANG": source.get("LANG") or "C.UTF-8",
        "RECONCILER_RUN_ID": ctx.run_id,
        "RECONCILER_WORKSPACE": ctx.workspace,
        "RECONCILER_WORKFLOW": ctx.workflow,
        "RECONCILER_JOB": ctx.job,
        "RECONCILER_REPO_DIR": str(ctx.repo_dir),
        "RECONCILER_JOB_DIR": str(ctx.job_dir),
    }


def format_seconds(seconds: float) -> str:
    return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"


def failure_of(outcome: ProcessOutcome, what: str = "command") -> JobResult | None:
    """The JobResult for a command that did not succeed, or None when it exited 0."""
    if outcome.cancelled:
        return JobResult(ok=False, message="cancelled; the process tree was killed", retryable=False)
    if outcome.timed_out:
        return JobResult(ok=False, message=f"timed out after {format_seconds(outcome.seconds)}; "
                                           "the process tree was killed")
    if outcome.returncode is None:
        # a retry cannot create the program
        return JobResult(ok=False, message=outcome.error or f"{what} could not be started", retryable=False)
    if outcome.returncode < 0:
        try:
            name = signal.Signals(-outcome.returncode).name
        except ValueError:
            name = f"signal {-outcome.returncode}"
        return JobResult(ok=False, message=f"{what} was killed by {name}")
    if outcome.returncode != 0:
        return JobResult(ok=False, message=f"{what} exited with code {outcome.returncode}")
    return None
