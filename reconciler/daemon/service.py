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

import copy
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from reconciler.core.plan import DELETE
from reconciler.daemon.config import DaemonConfig
from reconciler.engine import operations
from reconciler.store import lakegate

log = logging.getLogger("reconciler.daemon")

DAEMON_FILE = "daemon.json"
RETRY_BUSY_SECONDS = 0.5  # a reconcile or scheduled run that found the state in use tries again this soon
DRIFT_SLICE_SECONDS = 1.0  # drift checking per loop cycle, so that a push is never waiting behind it


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
    previews: dict[str, str] = field(default_factory=dict)  # branch -> head planned
    drift: dict[str, str] = field(default_factory=dict)  # resource id -> what drifted
    last_errors: list[dict] = field(default_factory=list)  # validation errors of the last reconciled commit
    last_held: str | None = None  # why deletes are held, if they are
    products: list[dict] | None = None  # data products' health and SLOs as last evaluated (ProductStatus.to_json())


RELEASE_AFTER = 200  # resources applied in one reconcile after which the idle loop lets go of what it read


def release_memory() -> int | None:
    """Give the memory a large reconcile freed back to the system: a full collection, then glibc's
    `malloc_trim(0)`, which returns the free pages inside its heaps as well as at their tops (free() returns
    only a heap's top). After a first sync of 10,000 resources that was 5-13 MB (session 15); most of what
    the sync had left came from the specs the apply read (WarmPlanner.let_go, called first). Returns the
    bytes the resident set shrank by, or None where there is no glibc (the collection still runs)."""
    import ctypes
    import gc

    def resident() -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            return 0

    before = resident()
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        return None
    freed = before - resident()
    log.info("gave %.0f MB of freed memory back to the system", freed / 2 ** 20)
    return freed


class Daemon:
    def __init__(self, config: DaemonConfig):
        self.config = config
        self.state_dir = Path(config.state_dir).absolute()
        self.target = operations.Target(repo=config.repo, ref=config.branch, state_dir=self.state_dir,
                                        paths=list(config.paths))
        self.wake = threading.Event()
        self.stop = threading.Event()
        self.pushed = threading.Event()  # a webhook announced a push: a drift slice under way gives way to it
        self._busy_retries = 0  # retries in a row that found the state in another process's hands
        self.due: set[str] = set()  # workflows whose schedule fired
        self.drift_wanted = False
        self.slo_wanted = False  # the SLO schedule fired; every reconcile that applied or ran something evaluates too
        self._slo_signature: dict | None = None  # product -> (health, SLOs met) of the last evaluation
        self._http = None
        self._cron_registered: dict[str, tuple] = {}  # cron job id -> (cron, timezone) it was added with
        self._schedules_seen: dict[str, tuple] = {}  # workflow id -> (spec hash, its schedule)
        from reconciler.store.state import LiveRecords

        self.live = LiveRecords()  # the records, read again only where the state changed
        self._runs_latest: dict | None = None  # workflow id -> its latest run, kept up to date by _latest_runs
        self._prune_keep: set | None = None  # commits whose checkouts stay, once the loop is idle
        self._checkpoint_wanted = False  # the state's WAL is merged once the loop is idle
        self._release_wanted = False  # memory a large reconcile freed goes back to the system once idle
        self._drift_queue: list[str] = []  # resources still to look at in the current drift pass
        self._drift_found: dict[str, str] = {}
        self.scheduler = None
        self._branch = None  # the status branch writer, for the source's repository
        self._preview_heads: dict[str, str] = {}  # preview branch -> the head last planned
        from reconciler.engine.warm import WarmPlanner

        from reconciler.engine.access_plan import InstanceSubjects

        # policies naming users or groups this instance does not know are errors; previews' access diffs list its users
        self.subjects = InstanceSubjects.from_config(config)
        self.warm = WarmPlanner(self.state_dir, list(config.paths), self.subjects.known_for_validation(), compact=True,
                                isolate=True)
        self.state = DaemonState()
        from reconciler.daemon.config import read_secret_file
        from reconciler.daemon.metrics import Metrics

        self.metrics = Metrics()
        # without a configured secret every delivery is refused (401): nothing unsigned triggers anything
        self.webhook_secret = read_secret_file(config.webhook_secret_file).encode() \
            if config.webhook_secret_file else None

    # -- triggers --------------------------------------------------------------------------
    def trigger(self, reason: str = "poll", push: bool = False) -> None:
        """Wake the loop; `push`: a new head is announced (a webhook), so a drift slice stops at once."""
        log.debug("reconcile wanted: %s", reason)
        if push:
            self.pushed.set()
        self.wake.set()

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler

        from reconciler.store.lock import StateLock

        self.state_dir.mkdir(parents=True, exist_ok=True)
        # with lake_hold, the lake stays open between workflow runs (opening and closing 7,000 tables cost
        # ~0.5 s a run); it is closed once idle that long, or at once when another process asks for it
        lakegate.keep_open(self.config.lake_hold)
        with StateLock(self.state_dir, "daemon"):
            scheduler = self.scheduler = BackgroundScheduler(timezone="UTC")
            scheduler.add_job(self.trigger, "interval", seconds=self.config.interval, id="poll",
                              kwargs={"reason": "poll"}, coalesce=True, max_instances=1)
            scheduler.add_job(self._drift_due, "interval", seconds=self.config.drift_interval, id="drift",
                              coalesce=True, max_instances=1)
            scheduler.add_job(self._slo_due, "interval", seconds=self.config.slo_interval, id="slo",
                              coalesce=True, max_instances=1)
            scheduler.start()
            server = self._http = self._start_http()
            self._announce()
            self.wake.set()  # the first sync at once
            try:
                while not self.stop.is_set():
                    self.wake.wait(timeout=1.0)
                    if self.stop.is_set():
                        break
                    if not self.wake.is_set():
                        self._tidy()  # idle: what the last reconcile left for later
                        continue
                    lakegate.close_idle()  # a lake kept open too long, or that another process asked for
                    self.wake.clear()
                    if self.reconcile_once().skipped and not self.wake.is_set():
                        self._tidy()  # nothing new came in: what the last reconcile left for later
            finally:
                try:
                    self._tidy()
                except Exception as e:  # noqa: BLE001  stopping anyway
                    log.debug("tidying up at exit failed: %s", e)
                lakegate.keep_open(0)
                lakegate.close_idle()
                (self.state_dir / DAEMON_FILE).unlink(missing_ok=True)
                scheduler.shutdown(wait=False)
                if server is not None:
                    server.stop()

    def _announce(self) -> None:
        """state_dir/daemon.json: where the CLI's read commands find this daemon's API while a reconcile
        holds the state database (DuckDB lets one process open it at a time)."""
        import json

        host = self.config.host if self.config.host not in ("0.0.0.0", "::") else "127.0.0.1"
        info = {"pid": os.getpid(), "url": f"http://{host}:{self.config.port}",
                "token_file": str(self.config.api_token_file) if self.config.api_token_file else None}
        tmp = self.state_dir / (DAEMON_FILE + ".tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.state_dir / DAEMON_FILE)

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
            from reconciler.store.state import StateInUse

            message = e.message if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
            log.error("reconcile failed: %s", message, exc_info=not isinstance(e, UserError))
            self.metrics.reconciles.labels(result="error").inc()
            if isinstance(e, StateInUse):  # another process reads the state this moment: soon again, not a poll later
                self._retry_soon("the state was in use")
            return ReconcileResult(commit=None, errors=1, seconds=time.monotonic() - started)
        result.seconds = time.monotonic() - started
        if not self.due:
            self._busy_retries = 0  # the state was ours this time (a scheduled run that waits keeps the count)
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
        self.pushed.clear()  # whatever was announced so far is in the head fetched now
        source = operations.open_source(self.target)  # a URL is fetched into its mirror here
        head = source.commit
        if head != self.state.last_commit or force:
            # a workflow may run: the lake (~0.3 s to open at 7,000 tables) opens while the plan is made
            lakegate.open_ahead(self.state_dir / "lake.duckdb")
        ran = self._run_due_workflows()
        drift_changed = False
        # a new head goes first; drift is looked for in slices between pushes, never in the way of one
        if self.drift_wanted and head == self.state.last_commit and not force:
            before = dict(self.state.drift)
            if self._check_drift() and self.config.self_heal:
                force = True  # drifted resources were marked Pending: the plan applies them again
            drift_changed = self.state.drift != before
        if head == self.state.last_commit and not force:
            wrote = self._previews(source)
            if self.slo_wanted or ran:
                drift_changed |= self._evaluate_slos()  # a product's health or an SLO's verdict moved
            if drift_changed:  # the report changes even though the source did not
                wrote += self._write_status(source, head, self.state.last_errors, self.state.last_held) is not None
            if wrote:
                self._push(source)
            return ReconcileResult(commit=head, skipped=True)
        from reconciler.store.state import StateStore

        # one connection for the cycle (DuckDB lets one process write the file; the CLI reads through the API
        # meanwhile), and the records read incrementally: only what the last cycle wrote is read again
        with StateStore.open(self.state_dir) as store:
            store.defer_checkpoint()  # merged when the loop is idle, not in the way of this push's report
            self._checkpoint_wanted = True
            records, serial = self.live.read(store)
            plan, diags = self._plan(source, records, serial)
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
                                           lock=False, source=source, store=store, live=self.live)
                applied = sum(1 for r in outcome.results if r.phase in ("Ready", "Deleted"))
                failed = len(outcome.results) - applied
                self._release_wanted |= len(outcome.results) >= RELEASE_AFTER
            self.state.last_errors, self.state.last_held = [d.to_json() for d in errors], held
            self._evaluate_slos()  # after the apply and its workflow runs, before the report that shows them
            status_commit = self._write_status(source, head, self.state.last_errors, held, store=store)
            records, _ = self._records_and_runs(with_runs=False, store=store)
        if not self.config.lake_hold:
            lakegate.discard_held(self.state_dir / "lake.duckdb")  # opened ahead for nothing: let it go
        self._push(source)  # the status first: previews of other branches are not in the way of a push's report
        if self._previews(source):
            self._push(source)
        self.state.last_commit = head
        self._update_gauges(records)
        self._sync_schedules(records)
        # old checkouts go when the loop is idle: removing a 10,000-file tree is not in the way of a push
        self._prune_keep = {r.commit for r in records.values() if r.commit} | {head}
        return ReconcileResult(commit=head, applied=applied, failed=failed, held=held, errors=len(errors),
                               status_commit=status_commit)

    def _tidy(self) -> None:
        """What a reconcile leaves for later, done when the loop is idle: old checkouts are removed (a
        10,000-file tree each) and the state's WAL is merged into the database file."""
        lakegate.close_idle()
        keep, self._prune_keep = self._prune_keep, None
        if keep is not None:
            operations.prune_checkouts(self.state_dir, keep)
        if self._checkpoint_wanted:
            from reconciler.store.state import StateStore

            self._checkpoint_wanted = False
            try:
                with StateStore.open(self.state_dir) as store:
                    store.checkpoint()
            except Exception as e:  # noqa: BLE001  merged at the next close or open instead
                log.debug("state checkpoint skipped: %s", e)
        if self._release_wanted:
            self._release_wanted = False
            self.warm.let_go()  # the specs the apply read, kept by the resolved resources
            release_memory()

    def _plan(self, source, records, serial):
        """The plan of the new head, from the warm planner: only what changed since the last head is read
        again (engine/warm.py), so a one-file push of a large repository plans in milliseconds."""
        from reconciler.core.plan import Plan

        if self.warm.resolver is None and hasattr(source, "tree"):
            self.warm.restore(source)  # a restart: the last snapshot, updated to this head, not a full resolve
        plan: Plan = self.warm.plan(source, records, serial=serial, label=operations.source_label(self.target),
                                    max_prune=self.config.max_prune, created_at=operations.now_iso(),
                                    records_changed=self.live.changed_since)
        diags = sorted(self.warm.resolver.out.diagnostics if self.warm.resolver else [], key=lambda d: d.sort_key())
        return plan, diags

    # -- status back in git ----------------------------------------------------------------
    def _write_status(self, source, head: str | None, errors: list[dict], held: str | None,
                      store=None) -> str | None:
        import pygit2

        from reconciler.gitops.status import status_files

        repo = getattr(source, "repo", None)
        if not isinstance(repo, pygit2.Repository):
            return None  # a plain folder has no branch to report on
        records, runs = self._records_and_runs(store=store)
        files = status_files(list(records.values()), runs, head, errors=errors, held=held,
                             drift=self.state.drift or None, products=self.state.products)
        try:
            return self._status_branch(repo).write(files, f"Status of {self.config.branch} at {head}")
        except (OSError, pygit2.GitError) as e:  # the environment, not a bug: say what to fix, no traceback
            from reconciler.core.diagnostics import UserError

            raise UserError(f"cannot write the status branch {self.config.status_branch} in {repo.path}: {e}",
                            hint="the daemon commits its status into the repository it reads (or its mirror of a "
                                 "remote): it must be writable by the daemon's user") from None

    def _status_branch(self, repo):
        from reconciler.gitops.status import StatusBranch

        if self._branch is None or self._branch.repo.path != repo.path:
            self._branch = StatusBranch(repo, self.config.status_branch)
        return self._branch

    def _push(self, source) -> None:
        """Push the status branch when the source is remote (a rejected push is replayed on top)."""
        from reconciler.gitops.source import is_url

        branch = self._branch
        if branch is not None and is_url(self.config.repo) and branch.tip() is not None:
            branch.push(self.config.repo)

    # -- pull-request previews -------------------------------------------------------------
    def _previews(self, source) -> int:
        """Plan every preview branch whose head moved against the tracked branch's recorded state and
        write plans/<branch>.md. Never applies anything; returns how many previews were written."""
        import pygit2

        from reconciler.cli.render import plan_markdown

        repo = getattr(source, "repo", None)
        if not isinstance(repo, pygit2.Repository):
            return 0
        heads = self._preview_heads
        written = 0
        for name in sorted(repo.branches.local):
            if not self.config.wants_preview(name):
                continue
            tip = str(repo.branches.local[name].target)
            if heads.get(name) == tip:
                continue
            target = operations.Target(repo=self.config.repo, ref=name, state_dir=self.state_dir,
                                       paths=list(self.config.paths), subjects=self.subjects)
            try:
                plan, _ = operations.make_plan(target, max_prune=self.config.max_prune)
            except Exception as e:  # noqa: BLE001  one broken preview must not stop the others
                log.warning("preview of %s failed: %s", name, e)
                continue
            markdown = plan_markdown(plan, title=f"Reconciler plan for `{name}` at `{tip[:8]}` "
                                                 f"against `{self.config.branch}`")
            self._status_branch(repo).write_preview(name, markdown, tip)
            heads[name] = tip
            written += 1
        self.state.previews = {n: h for n, h in heads.items()}
        return written

    # -- drift -----------------------------------------------------------------------------
    def _drift_due(self) -> None:
        self.drift_wanted = True
        self.trigger("drift check")

    def _check_drift(self) -> dict[str, str]:
        """Observe what was applied; report drift on the resources (message, STATUS.md, metric) and, with
        self_heal, mark them Pending so that the next plan applies them again."""
        from reconciler.engine.applier import _record_as_resource
        from reconciler.engine.drift import LakeLook, detect
        from reconciler.providers.base import ApplyContext
        from reconciler.store.state import StateStore

        with StateStore.open(self.state_dir) as store:
            # the records the loop keeps, refreshed where the state moved (reading all 10,000 anew took
            # ~60 ms of every slice); each check gets a copy, so specs it decodes are not kept on them
            records, _ = self.live.read(store)
            checkout = self.state_dir / "checkouts" / (self.state.last_commit or "worktree")
            ctx = ApplyContext(state_dir=self.state_dir, store=store, commit=self.state.last_commit,
                               repo_dir=lambda: checkout, resources={}, records=records, environ=dict(os.environ))
            if not self._drift_queue:  # a new pass over everything applied
                self._drift_queue = sorted(rid for rid, r in records.items() if r.type in ("depot", "workflow"))
                self._drift_found = {}
            # a slice of the pass per cycle (introspecting thousands of depots takes minutes), on one lake
            # connection (released between slices: the query API's readers of the lake go on meanwhile)
            # and a push announced meanwhile ends the slice: the next cycle takes the new head first
            deadline = time.monotonic() + DRIFT_SLICE_SECONDS
            with LakeLook(ctx.lake_path) as look:
                while self._drift_queue and time.monotonic() < deadline and not self.pushed.is_set():
                    rid = self._drift_queue.pop()
                    if rid in records:
                        self._drift_found.update(detect(ctx, {rid: copy.copy(records[rid])}, look))
            if self._drift_queue:
                self.trigger("drift check continues")
                return {}  # nothing new to report or heal until the pass is complete
            self.drift_wanted = False
            drift = self._drift_found
            for rid, message in drift.items():
                phase = "Pending" if self.config.self_heal else records[rid].phase
                store.mark(_record_as_resource(records[rid]), phase,
                           f"drift: {message}" + ("; re-applying (self_heal)" if self.config.self_heal else ""))
        self.state.drift = drift
        self.metrics.drifted.set(len(drift))
        if drift:
            log.warning("drift found: %s", drift)
        return drift

    # -- data products' SLOs ----------------------------------------------------------------
    def _slo_due(self) -> None:
        self.slo_wanted = True
        self.trigger("slo evaluation")

    def own_url(self) -> str:
        """Where this daemon's HTTP server answers (a wildcard listen address is reached on loopback)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.config.host, self.config.host)
        port = self.config.port
        if port == 0 and self._http is not None:  # "pick a free port": ask the server which one it got
            try:
                port = self._http.server.servers[0].sockets[0].getsockname()[1]
            except (AttributeError, IndexError):
                pass
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def _evaluate_slos(self) -> bool:
        """Probe the services that availability SLOs name, evaluate every product's SLOs and health, and
        record both (slo_results, dataproduct_health, service_checks). Runs on the loop thread, the one
        writer of the state. True when a product's health or an SLO's verdict changed since the last time."""
        from datetime import datetime, timezone

        from reconciler.products import slo
        from reconciler.products.probe import probe_service
        from reconciler.store.state import StateStore

        self.slo_wanted = False
        try:
            with StateStore.open(self.state_dir, read_only=True) as store:
                snapshot = slo.Snapshot.read(store)
            # probed with the state closed: the health route reads the state and the lake itself
            base = self.own_url()
            checks = [probe_service(base, sid) for sid in snapshot.services()]
            snapshot.add_probes(checks)
            now = datetime.now(timezone.utc)
            statuses = snapshot.evaluate(now)
            if statuses or checks or self._slo_signature != {}:  # nothing to record, nor any stale health to drop
                with StateStore.open(self.state_dir) as store:
                    if checks:
                        store.products.record_checks(checks, now)
                    slo.record_evaluation(store, statuses, now)
        except Exception as e:  # noqa: BLE001  a failed evaluation is retried at the next one; the loop goes on
            from reconciler.core.diagnostics import UserError

            log.warning("SLO evaluation failed: %s", e.message if isinstance(e, UserError) else e,
                        exc_info=not isinstance(e, UserError))
            return False
        self.state.products = [s.to_json() for s in statuses]
        self.metrics.set_products(statuses)
        before = self._slo_signature or {}
        signature = {s.name: (s.state, tuple((r.slo, r.ok) for r in s.slos)) for s in statuses}
        self._slo_signature = signature
        for s in statuses:
            if signature[s.name] != before.get(s.name):
                log.info("data product %s is %s: %s", s.name, s.state, s.detail)
        return signature != before

    # -- workflow schedules ----------------------------------------------------------------
    def _sync_schedules(self, records: dict | None = None) -> None:
        """One cron job per applied workflow with a schedule (timezone honoured); a fire queues a run."""
        if self.scheduler is None:
            return
        from apscheduler.triggers.cron import CronTrigger

        if records is None:
            records, _ = self._records_and_runs(with_runs=False)
        wanted = {}
        seen = {}
        for rid, rec in records.items():
            if rec.type != "workflow":
                continue
            # a workflow's schedule only changes with its spec hash: decode a spec only when it moved
            hit = self._schedules_seen.get(rid)
            if hit is not None and hit[0] == rec.hash:
                sched = hit[1]
            else:  # read without keeping the decoded spec on the record (4,800 workflows' specs: ~50 MB)
                spec = rec.peek_spec() if hasattr(rec, "peek_spec") else rec.spec
                sched = ((spec or {}).get("workflow") or {}).get("schedule")
            seen[rid] = (rec.hash, sched)
            if sched and sched.get("cron") and rec.phase == "Ready":
                wanted[f"cron:{rid}"] = (rec, sched)
        self._schedules_seen = seen
        for job in self.scheduler.get_jobs():
            if job.id.startswith("cron:") and job.id not in wanted:
                job.remove()
                self._cron_registered.pop(job.id, None)
        for job_id, (rec, sched) in wanted.items():
            key = (sched["cron"], sched.get("timezone") or "UTC")
            if self._cron_registered.get(job_id) == key and self.scheduler.get_job(job_id) is not None:
                continue  # registered as it is: no trigger to build again (thousands of workflows)
            trigger = CronTrigger.from_crontab(key[0], timezone=key[1])
            self.scheduler.add_job(self._schedule_fired, trigger, id=job_id, args=[rec.id], replace_existing=True,
                                   coalesce=True, max_instances=1, misfire_grace_time=60)
            self._cron_registered[job_id] = key

    def _retry_soon(self, reason: str) -> None:
        """Wake the loop again soon, whatever the poll interval: RETRY_BUSY_SECONDS, doubled for each retry in
        a row that found the state still in use (up to a minute), so a long reader costs a few log lines."""
        delay = min(RETRY_BUSY_SECONDS * 2 ** self._busy_retries, 60.0)
        self._busy_retries += 1
        retry = threading.Timer(delay, self.trigger, args=(reason,))
        retry.daemon = True
        retry.start()

    def _schedule_fired(self, workflow_id: str) -> None:
        self.due.add(workflow_id)
        self.trigger(f"schedule {workflow_id}")

    def _run_due_workflows(self) -> int:
        """Run the workflows whose schedule fired; how many ran."""
        from reconciler.core.ids import split_id
        from reconciler.store.state import StateInUse

        ran = 0
        while self.due:
            workflow_id = self.due.pop()
            _, ws, name = split_id(workflow_id)
            try:
                outcome = operations.run_workflow(self.target, name, ws, trigger="schedule", stop=self.stop, lock=False)
                ran += 1
                log.info("scheduled run of %s: %s %s", workflow_id, outcome.status, outcome.message)
            except StateInUse as e:  # another process reads the state this moment: the fire is kept, not lost
                self.due.add(workflow_id)
                log.info("scheduled run of %s waits for the state: %s", workflow_id, e.message)
                self._retry_soon("a scheduled run waits")
                break
            except Exception as e:  # noqa: BLE001  a failed scheduled run is recorded; the daemon goes on
                log.warning("scheduled run of %s failed: %s", workflow_id, e)
        return ran

    def _records_and_runs(self, with_runs: bool = True, store=None):
        """Recorded resources, and the latest run of each workflow (with_runs=False: {}), both read
        incrementally: only the records written and the runs started (or still running) since the last read."""
        import contextlib

        from reconciler.store.state import StateStore

        with (contextlib.nullcontext(store) if store is not None
              else StateStore.open(self.state_dir, read_only=True)) as store:
            records, _ = self.live.read(store)
            runs = self._latest_runs(store, records) if with_runs else {}
        return records, runs

    def _latest_runs(self, store, records: dict) -> dict:
        """workflow id -> its latest run (by start time, then run id). The first call reads them all in one
        query; later calls read the runs started since the newest one seen, and those seen unfinished."""
        from reconciler.store.runs import RUN_COLUMNS

        columns = ", ".join(f'"{c}"' for c in RUN_COLUMNS)
        latest = self._runs_latest
        if latest is None:
            # one query for every workflow's latest run: one query per workflow took ~11 s at 4,800 workflows
            rows = store.runs._query(f"SELECT {columns} FROM runs QUALIFY row_number() OVER "
                                     "(PARTITION BY workflow_id ORDER BY started_at DESC, run_id DESC) = 1")
            latest = {}
        else:
            since = max((r["started_at"] or "" for r in latest.values()), default="")
            open_runs = [r["run_id"] for r in latest.values() if r["status"] in ("running", "pending")]
            rows = store.runs._query(f"SELECT {columns} FROM runs WHERE started_at >= ? "
                                     "OR run_id IN (SELECT unnest(?::VARCHAR[]))", [since, open_runs])
        for row in rows:
            run = dict(zip(RUN_COLUMNS, row))
            seen = latest.get(run["workflow_id"])
            if seen is None or run["run_id"] == seen["run_id"] or \
                    (run["started_at"] or "", run["run_id"]) > (seen["started_at"] or "", seen["run_id"]):
                latest[run["workflow_id"]] = run
        self._runs_latest = latest
        return {rid: latest[rid] for rid, rec in records.items() if rec.type == "workflow" and rid in latest}

    def _update_gauges(self, records: dict | None = None) -> None:
        if records is None:
            records, _ = self._records_and_runs(with_runs=False)
        counts: dict[str, int] = {}
        for r in records.values():
            counts[r.phase] = counts.get(r.phase, 0) + 1
        for phase in ("Pending", "Applying", "Ready", "Failed", "Blocked", "Deleting"):
            self.metrics.resources.labels(phase=phase).set(counts.get(phase, 0))
