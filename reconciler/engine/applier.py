"""The apply engine: walks a Plan in dependency order through the providers.

- creates/updates/replaces in topological order, independent ones in parallel;
  deletes afterwards, in reverse dependency order (prune last, as Argo CD does);
- a failure is an Outcome on that resource; everything that depends on it becomes
  Blocked and the walk goes on;
- every step is bracketed in the state store: `begin` (phase Applying/Deleting, the
  old applied spec kept) before the provider runs, `finish` after, so a crash at any
  point leaves a record from which the next plan converges.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Callable

from reconciler.core.plan import CREATE, DELETE, REPLACE, UPDATE, Action, Plan
from reconciler.core.record import BLOCKED, FAILED, READY, Record
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext, Outcome

log = logging.getLogger("reconciler.apply")

# Fault injection for the crash tests: RECONCILER_CRASH_AT="begin:ID" (or "applied:ID") makes the
# process SIGKILL itself at that point, a real `kill -9` at a chosen place instead of a timed one.
_CRASH_AT = os.environ.get("RECONCILER_CRASH_AT", "")


def _crash_point(point: str, rid: str, writes: "WriteBehind | None" = None) -> None:
    if _CRASH_AT and _CRASH_AT == f"{point}:{rid}":
        if writes is not None:
            writes.flush()  # crash with what the engine had queued recorded, the worst case for the next run
        os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class ResourceResult:
    id: str
    action: str
    phase: str
    message: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"id": self.id, "action": self.action, "phase": self.phase, "message": self.message,
                "seconds": round(self.seconds, 3)}


@dataclass
class ApplyResult:
    results: list[ResourceResult] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.phase == READY or r.phase == "Deleted" for r in self.results)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.results:
            out[r.phase] = out.get(r.phase, 0) + 1
        return out


Event = Callable[[str, Action, ResourceResult | None], None]  # ("start"|"done", action, result)


class WriteBehind:
    """Batches the engine's state writes: workers queue them, the scheduling thread flushes them
    in one transaction per kind. One small DuckDB transaction costs ~8 ms, so writing each
    begin/finish on its own made a 10,000-resource apply spend minutes in the store.

    Crash safety does not depend on a begin being durable before its provider runs: a record
    that still holds the old hash (or no record) makes the next plan apply the resource again,
    and every provider operation is idempotent.

    Flushes are serialised: `flush()` returns only once everything queued before the call is
    written, also when another thread took the queue a moment earlier and is still writing it.
    Without that, a delete's worker could remove a record while the scheduling thread was still
    writing its `Deleting` begin (which brought it back), or a later finish could land before an
    earlier begin of the same resource and leave it `Applying`.
    """

    # how stale the recorded phases may get while an apply runs (`get` shows them)
    INTERVAL = 0.5

    def __init__(self, store):
        self.store = store
        self.last_flush = time.monotonic()
        self.lock = threading.Lock()  # guards the queues
        self.flushing = threading.Lock()  # one flush at a time, in queue order
        self.begins: list = []
        self.finishes: list = []
        self.marks: list = []

    def begin(self, resource, commit, action) -> None:
        with self.lock:
            self.begins.append((resource, commit, action))

    def finish(self, rid, phase, message, *, resource=None, commit=None, outputs=None) -> None:
        from reconciler.store.state import Finish

        with self.lock:
            self.finishes.append(Finish(rid, phase, message, resource, commit, outputs))

    def mark(self, resource, phase, message) -> None:
        with self.lock:
            self.marks.append((resource, phase, message))

    def flush_due(self) -> None:
        if time.monotonic() - self.last_flush >= self.INTERVAL:
            self.flush()

    def flush(self) -> None:
        with self.flushing:
            self.last_flush = time.monotonic()
            with self.lock:
                begins, finishes, marks = self.begins, self.finishes, self.marks
                self.begins, self.finishes, self.marks = [], [], []
            if begins:
                self.store.bulk_begin(begins)
            if finishes:
                self.store.bulk_finish(finishes)
            if marks:
                self.store.bulk_mark(marks)


def _record_as_resource(rec: Record) -> Resource:
    return Resource(id=rec.id, type=rec.type, name=rec.name, workspace=rec.workspace, spec=rec.spec or {},
                    file=rec.file or "", doc_index=0, line=0, depends_on=set(rec.depends_on), prune=rec.prune,
                    bundle=rec.bundle, hash=rec.hash or "-")


class Applier:
    def __init__(self, ctx: ApplyContext, get_provider, parallelism: int = 4, on_event: Event | None = None,
                 stop: threading.Event | None = None):
        self.ctx = ctx
        self.writes = WriteBehind(ctx.store)
        self.get_provider = get_provider
        self.parallelism = max(1, parallelism)
        self.on_event = on_event or (lambda *a: None)
        self.stop = stop or threading.Event()
        self.results: dict[str, ResourceResult] = {}

    # -- one resource ----------------------------------------------------------------------
    def _call(self, fn, *args) -> Outcome:
        try:
            out = fn(*args)
            return out if isinstance(out, Outcome) else Outcome.failure(f"provider returned {out!r}")
        except Exception as e:  # a provider bug must not stop the walk: it becomes this resource's failure
            log.exception("provider error")
            return Outcome.failure(f"internal provider error: {type(e).__name__}: {e}")

    def _apply_one(self, a: Action) -> ResourceResult:
        started = time.monotonic()
        r = a.resource
        self.on_event("start", a, None)
        provider = self.get_provider(a.type)
        prior = self.ctx.records.get(a.id)
        self.writes.begin(r, self.ctx.commit, a.action)
        _crash_point("begin", a.id, self.writes)
        if a.action == REPLACE and prior is not None and prior.hash is not None:
            out = self._call(provider.delete, self.ctx, prior)
            if out.ok:
                prior = None
                out = self._call(provider.apply, self.ctx, r, None)
        else:
            out = self._call(provider.apply, self.ctx, r, prior)
        _crash_point("applied", a.id, self.writes)
        if out.ok:
            self.writes.finish(a.id, READY, out.message, resource=r, commit=self.ctx.commit, outputs=out.outputs)
            res = ResourceResult(a.id, a.action, READY, out.message)
        else:
            self.writes.finish(a.id, FAILED, out.message, commit=self.ctx.commit)
            res = ResourceResult(a.id, a.action, FAILED, out.message)
        res.seconds = time.monotonic() - started
        self.on_event("done", a, res)
        return res

    def _delete_one(self, a: Action) -> ResourceResult:
        started = time.monotonic()
        self.on_event("start", a, None)
        rec = self.ctx.records.get(a.id) or self.ctx.store.get(a.id)
        if rec is None:
            res = ResourceResult(a.id, DELETE, "Deleted", "already gone")
        else:
            self.writes.begin(_record_as_resource(rec), self.ctx.commit, DELETE)
            _crash_point("begin", a.id, self.writes)
            self.writes.flush()
            out = self._call(self.get_provider(a.type).delete, self.ctx, rec)
            _crash_point("applied", a.id, self.writes)
            if out.ok:
                self.writes.flush()
                self.ctx.store.remove(a.id)
                res = ResourceResult(a.id, DELETE, "Deleted", out.message)
            else:
                self.writes.finish(a.id, FAILED, f"delete failed: {out.message}")
                res = ResourceResult(a.id, DELETE, FAILED, f"delete failed: {out.message}")
        res.seconds = time.monotonic() - started
        self.on_event("done", a, res)
        return res

    def _block(self, a: Action, message: str) -> None:
        if a.resource is not None:
            self.writes.mark(a.resource, BLOCKED, message)
        else:
            rec = self.ctx.records.get(a.id)
            if rec is not None:
                self.writes.mark(_record_as_resource(rec), rec.phase, f"not deleted: {message}")
        res = ResourceResult(a.id, a.action, BLOCKED, message)
        self.results[a.id] = res
        self.on_event("done", a, res)

    # -- the walk --------------------------------------------------------------------------
    def run(self, plan: Plan) -> ApplyResult:
        applies = [a for a in plan.actions if a.action in (CREATE, UPDATE, REPLACE)]
        deletes = [a for a in plan.actions if a.action == DELETE]
        try:
            self._run_applies(applies)
            self._run_deletes(deletes)
        finally:
            self.writes.flush()
        ordered = [self.results[a.id] for a in applies + deletes if a.id in self.results]
        return ApplyResult(ordered, interrupted=self.stop.is_set() and len(ordered) < len(applies) + len(deletes))

    def _unsatisfied(self, dep: str, in_plan: set[str]) -> str | None:
        """Why an out-of-plan dependency is not usable, or None when it is."""
        if dep in in_plan:
            return None
        rec = self.ctx.records.get(dep)
        if rec is None:
            return f"depends on {dep}, which has never been applied (is its document invalid?)"
        if rec.phase != READY and rec.hash is None:
            return f"depends on {dep}, which is {rec.phase}: {rec.message}".rstrip(": ")
        return None

    def _run_applies(self, actions: list[Action]) -> None:
        if not actions:
            return
        in_plan = {a.id for a in actions}
        pending = {a.id: a for a in actions}
        waiting_on = {a.id: {d for d in a.resource.depends_on if d in in_plan} for a in actions}
        for a in actions:
            for d in sorted(a.resource.depends_on):
                why = self._unsatisfied(d, in_plan)
                if why:
                    self._block(a, why)
                    pending.pop(a.id, None)
                    break
        self._propagate_blocked(pending, waiting_on)
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix="apply") as pool:
            while pending or running:
                if not self.stop.is_set():
                    for rid in [r for r in pending if not waiting_on[r] and r not in running.values()]:
                        if len(running) >= self.parallelism:
                            break
                        if pending[rid].type in ("bundle", "dataproduct"):
                            self.writes.flush()  # their providers read their members' recorded phases
                        running[pool.submit(self._apply_one, pending[rid])] = rid
                if not running:
                    break
                # wake at least every flush interval: a long apply (a workflow run) must show as Applying
                done, _ = wait(running, timeout=WriteBehind.INTERVAL, return_when=FIRST_COMPLETED)
                self.writes.flush_due()
                for fut in done:
                    rid = running.pop(fut)
                    res = fut.result()
                    self.results[rid] = res
                    pending.pop(rid, None)
                    if res.phase == READY:
                        for other in waiting_on.values():
                            other.discard(rid)
                    else:
                        self._propagate_blocked(pending, waiting_on)

    def _propagate_blocked(self, pending: dict[str, Action], waiting_on: dict[str, set[str]]) -> None:
        changed = True
        while changed:
            changed = False
            for rid in list(pending):
                bad = [d for d in waiting_on[rid] if d in self.results and self.results[d].phase != READY]
                if bad:
                    d = bad[0]
                    self._block(pending.pop(rid), f"blocked: depends on {d}, which is {self.results[d].phase}")
                    changed = True

    def _run_deletes(self, actions: list[Action]) -> None:
        failed: set[str] = set()
        for a in actions:  # already in reverse dependency order
            if self.stop.is_set():
                return
            rec = self.ctx.records.get(a.id)
            blockers = [f for f in failed if rec is not None and f in self._dependents_of(a.id)]
            if blockers:
                self._block(a, f"{blockers[0]}, which depends on it, could not be deleted")
                failed.add(a.id)
                continue
            res = self._delete_one(a)
            self.results[a.id] = res
            if res.phase != "Deleted":
                failed.add(a.id)

    def _dependents_of(self, rid: str) -> set[str]:
        return {r.id for r in self.ctx.records.values() if rid in r.depends_on}


def apply_plan(plan: Plan, ctx: ApplyContext, get_provider, parallelism: int = 4, on_event: Event | None = None,
               stop: threading.Event | None = None) -> ApplyResult:
    return Applier(ctx, get_provider, parallelism, on_event, stop).run(plan)
