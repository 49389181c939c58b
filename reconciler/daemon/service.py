"""The GitOps daemon: poll the tracked branch, reconcile when it moved, report back on the status branch.

One reconcile at a time: triggers (the poll, later webhooks and schedules) only set
`wake`; the loop thread coalesces whatever arrived during a reconcile into one
more run after it. The state lock is held for the daemon's whole life (one daemon
per state dir); the DuckDB state is opened only while a reconcile reads or writes
it, so `reconciler get` works between reconciles.

Unlike the CLI's `apply`, the daemon applies the valid part of a commit whose
other files are broken (those keep their last applied state, never pruned), and
a plan that would delete more than `max_prune` resources is applied without its
deletes, which stay held and reported until a person runs `apply --allow-prune`.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.plan import DELETE
from reconciler.daemon.config import DaemonConfig
from reconciler.engine import operations

log = logging.getLogger("reconciler.daemon")


@dataclass
class ReconcileResult:
    commit: str | None
    applied: int = 0
    failed: int = 0
    held: str | None = None
    errors: int = 0
    status_commit: str | None = None
    seconds: float = 0.0
    skipped: bool = False


@dataclass
class DaemonState:
    """What the HTTP endpoints show; written by the loop thread only."""

    ready: bool = False
    last_commit: str | None = None
    last_result: ReconcileResult | None = None
    last_success_at: float | None = None
    reconciles: int = 0
    history: list[ReconcileResult] = field(default_factory=list)


class Daemon:
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.state_dir = Path(config.state_dir).absolute()
        self.target = operations.Target(repo=config.repo, ref=config.branch, state_dir=self.state_dir,
                                        paths=list(config.paths))
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.state = DaemonState()
        from reconciler.daemon.config import read_secret_file
        from reconciler.daemon.metrics import Metrics

        self.metrics = Metrics()
        # without a configured secret every delivery is refused (401): nothing unsigned triggers anything
        self.webhook_secret = read_secret_file(config.webhook_secret_file).encode() \
            if config.webhook_secret_file else None

    # -- triggers --------------------------------------------------------------------------
    def trigger(self, reason: str = "poll") -> None:
        log.debug("reconcile wanted: %s", reason)
        self.wake.set()

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        from reconciler.store.lock import StateLock

        self.state_dir.mkdir(parents=True, exist_ok=True)
        with StateLock(self.state_dir, "daemon"):
            scheduler = BackgroundScheduler(timezone="UTC")
            scheduler.add_job(self.trigger, "interval", seconds=self.config.interval, id="poll",
                              kwargs={"reason": "poll"}, coalesce=True, max_instances=1)
            scheduler.start()
            server = self._start_http()
            self.wake.set()  # the first sync at once
            try:
                while not self.stop.is_set():
                    self.wake.wait(timeout=1.0)
                    if self.stop.is_set():
                        break
                    if not self.wake.is_set():
                        continue
                    self.wake.clear()
                    self.reconcile_once()
            finally:
                scheduler.shutdown(wait=False)
                if server is not None:
                    server.stop()

    def _start_http(self):
        from reconciler.daemon.http import HttpServer

        server = HttpServer(self, self.config.host, self.config.port)
        server.start()
        return server

    def reconcile_once(self, force: bool = False) -> ReconcileResult:
        started = time.monotonic()
        try:
            result = self._reconcile(force)
        except Exception as e:  # noqa: BLE001  a failed cycle is reported and retried at the next trigger
            from reconciler.core.diagnostics import UserError

            message = e.message if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            log.error("reconcile failed: %s", message, exc_info=not isinstance(e, UserError))
            self.metrics.reconciles.labels(result="error").inc()
            return ReconcileResult(commit=None, errors=1, seconds=time.monotonic() - started)
        result.seconds = time.monotonic() - started
        self.state.last_result = result
        self.state.reconciles += 1
        if not result.skipped:
            self.metrics.reconciles.labels(result="failed" if result.failed or result.errors else "ok").inc()
            self.metrics.reconcile_seconds.observe(result.seconds)
        if not result.failed:
            self.state.last_success_at = time.time()
            self.metrics.last_success.set(self.state.last_success_at)
            self.state.ready = True
        self.metrics.held_prunes.set(1 if result.held else 0)
        return result

    def _reconcile(self, force: bool) -> ReconcileResult:
        source = operations.open_source(self.target)  # a URL is fetched into its mirror here
        head = source.commit
        if head == self.state.last_commit and not force:
            return ReconcileResult(commit=head, skipped=True)
        plan, diags = operations.make_plan(self.target, max_prune=self.config.max_prune)
        errors = [d for d in diags if d.is_error]
        for d in errors:
            log.warning("%s", d.render())
        held = plan.held
        if held:  # apply everything but the deletes; they wait for a person
            plan.actions = [a for a in plan.actions if a.action != DELETE]
            plan.held = None
        applied = failed = 0
        if plan.has_changes:
            outcome = operations.apply(self.target, plan, stop=self.stop, purpose="daemon reconcile",
                                       lock=False)
            applied = sum(1 for r in outcome.results if r.phase in ("Ready", "Deleted"))
            failed = len(outcome.results) - applied
        status_commit = self._write_status(source, head, [d.to_json() for d in errors], held)
        self.state.last_commit = head
        self._update_gauges()
        return ReconcileResult(commit=head, applied=applied, failed=failed, held=held, errors=len(errors),
                               status_commit=status_commit)

    # -- status back in git ----------------------------------------------------------------
    def _write_status(self, source, head: str | None, errors: list[dict], held: str | None) -> str | None:
        import pygit2

        from reconciler.gitops.source import is_url
        from reconciler.gitops.status import StatusBranch, status_files

        repo = getattr(source, "repo", None)
        if not isinstance(repo, pygit2.Repository):
            return None  # a plain folder has no branch to report on
        records, runs = self._records_and_runs()
        files = status_files(list(records.values()), runs, head, errors=errors, held=held)
        branch = StatusBranch(repo, self.config.status_branch)
        commit = branch.write(files, f"Status of {self.config.branch} at {head}")
        if is_url(self.config.repo) and (commit is not None or branch.tip() is not None):
            branch.push(self.config.repo)
        return commit

    def _records_and_runs(self):
        from reconciler.store.state import StateStore

        with StateStore.open(self.state_dir, read_only=True) as store:
            records = store.records()
            runs = {}
            for rid, rec in records.items():
                if rec.type == "workflow":
                    latest = store.runs.runs(rid, limit=1)
                    if latest:
                        runs[rid] = latest[0]
        return records, runs

    def _update_gauges(self) -> None:
        records, _ = self._records_and_runs()
        counts: dict[str, int] = {}
        for r in records.values():
            counts[r.phase] = counts.get(r.phase, 0) + 1
        for phase in ("Pending", "Applying", "Ready", "Failed", "Blocked", "Deleting"):
            self.metrics.resources.labels(phase=phase).set(counts.get(phase, 0))
