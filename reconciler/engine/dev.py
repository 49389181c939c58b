"""`reconciler dev`: watch a working tree and apply each save into an isolated dev environment.

The dev environment is only a state dir of its own (default `<DIR>/.reconciler/dev`): its state, caches
and lake all live there, so the tracked environment's state dir is never opened. Files are read as they
are on disk, even inside a git work tree, so edits count before they are committed.
"""
from __future__ import annotations

import gc
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from reconciler.core.diagnostics import UserError

DEV_STATE_DIR = Path(".reconciler") / "dev"
# what can change a plan or a job's result: artefacts, job code and small data files
WATCHED_SUFFIXES = frozenset({".yaml", ".yml", ".py", ".csv", ".parquet", ".json", ".sql"})
WATCHED_NAMES = frozenset({".reconcilerignore"})
IGNORED_DIRS = frozenset({".git", "__pycache__", ".reconciler"})  # .reconciler/: state, never artefacts
READY_TIMEOUT_MS = 500  # how often the watcher wakes without events (first wake: the watcher exists)


def default_state_dir(directory: Path) -> Path:
    return Path(directory) / DEV_STATE_DIR


@dataclass
class CycleReport:
    """One save (or the start) and what it did: the plan, its diagnostics and the apply results."""

    number: int
    changed: list[str] = field(default_factory=list)  # paths relative to the directory; empty at start
    plan: object | None = None  # core.plan.Plan; None when planning failed
    diagnostics: list = field(default_factory=list)
    result: object | None = None  # engine.applier.ApplyResult; None when nothing was applied
    error: str | None = None  # why nothing was applied (a held prune, a lock held, a bug)
    error_hint: str | None = None
    traceback: str | None = None  # only for an internal error
    seconds: float = 0.0

    @property
    def errors(self) -> list:
        return [d for d in self.diagnostics if d.is_error]

    @property
    def summary(self) -> str:
        from reconciler.cli.render import summary_line

        return summary_line(self.plan) if self.plan is not None else ""

    @property
    def ok(self) -> bool:
        return self.error is None and not self.errors and (self.result is None or self.result.ok)


class DevFilter:
    """watchfiles filter: saves that can change the dev environment; never its own state."""

    def __init__(self, root: Path, state_dir: Path):
        self.root = os.path.realpath(root)
        self.state_dir = os.path.realpath(state_dir)

    def __call__(self, change, path: str) -> bool:
        return self.relative(path) is not None

    def relative(self, path: str) -> str | None:
        full = os.path.realpath(path)
        if full == self.state_dir or full.startswith(self.state_dir + os.sep):
            return None
        rel = os.path.relpath(full, self.root)
        if rel.startswith(".." + os.sep) or rel == "..":
            return None
        parts = rel.split(os.sep)
        name = parts[-1]
        if any(p in IGNORED_DIRS for p in parts[:-1]) or name.startswith(".#"):  # .#x.yaml: an editor's lock link
            return None
        if name not in WATCHED_NAMES and os.path.splitext(name)[1].lower() not in WATCHED_SUFFIXES:
            return None
        return rel.replace(os.sep, "/")


def fingerprint(directory: Path, filt: DevFilter) -> dict[str, str]:
    """The watched files and their blob ids: tells whether anything was saved while no watcher ran."""
    from reconciler.gitops.source import WorkTreeSource

    root = Path(directory)
    return {p: blob for p, blob in WorkTreeSource(root).list_files() if filt.relative(str(root / p)) is not None}


def run_cycle(target, number: int, changed: list[str], *, stop: threading.Event | None = None,
              allow_prune: bool = False) -> CycleReport:
    """Plan the tree against the dev state and, when it has no errors, apply it (the CLI's rule)."""
    from reconciler.engine import operations

    started = time.monotonic()
    report = CycleReport(number=number, changed=changed)
    try:
        plan, diags = operations.make_plan(target, allow_prune=allow_prune)
        report.plan, report.diagnostics = plan, list(diags)
        if report.errors:
            report.error = f"{len(report.errors)} error(s): nothing was applied"
        elif plan.held and not allow_prune:
            report.error = f"apply held: {plan.held}"
            report.error_hint = "run `reconciler dev` with --allow-prune to apply it"
        elif plan.has_changes:
            report.result = operations.apply(target, plan, stop=stop, allow_prune=allow_prune, purpose="dev")
    except UserError as e:  # a lock held by another process, an unreadable folder: report and keep watching
        report.error, report.error_hint = e.message, e.hint
        report.diagnostics.extend(e.diagnostics or [])
    except Exception as e:  # a bug must not end the session: the next save may work
        report.error = f"internal error: {type(e).__name__}: {e}"
        report.traceback = traceback.format_exc()
    finally:
        report.seconds = time.monotonic() - started
        gc.unfreeze()  # load_desired freezes what it built; a long session must not keep every cycle's objects
    return report


def dev_loop(directory: Path, state_dir: Path, *, on_cycle: Callable[[CycleReport], None], stop: threading.Event,
             debounce_ms: int = 200, max_cycles: int | None = None, allow_prune: bool = False) -> int:
    """Apply `directory` into `state_dir` at start, then once per batch of saves, until `stop` is set
    (or `max_cycles` cycles ran). Returns the number of cycles."""
    import watchfiles

    from reconciler.engine.operations import Target

    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise UserError(f"'{directory}' is not a folder", hint="pass the folder holding the artefacts")
    target = Target(repo=str(directory), state_dir=Path(state_dir), worktree=True)
    filt = DevFilter(directory, target.state_dir)
    cycles = 0

    def cycle(changed: list[str]) -> bool:
        nonlocal cycles
        cycles += 1
        on_cycle(run_cycle(target, cycles, changed, stop=stop, allow_prune=allow_prune))
        return stop.is_set() or (max_cycles is not None and cycles >= max_cycles)

    before = fingerprint(directory, filt)
    if cycle([]):
        return cycles
    watching = False
    for changes in watchfiles.watch(directory, watch_filter=filt, debounce=debounce_ms, stop_event=stop,
                                    rust_timeout=READY_TIMEOUT_MS, yield_on_timeout=True, raise_interrupt=False):
        if stop.is_set():
            break
        changed = sorted({rel for _, path in changes if (rel := filt.relative(path)) is not None})
        if not watching:
            watching = True
            # saves made after `before` and before the watcher started raised no event: compare contents
            now = fingerprint(directory, filt)
            if not changed and now != before:
                changed = sorted(p for p in now.keys() | before.keys() if now.get(p) != before.get(p))
        if changed and cycle(changed):
            break
    return cycles
