"""The workflow runner: one run of a workflow's job DAG.

- jobs start when every job they depend on succeeded, up to `parallelism` at once;
  a failed job marks everything downstream `skipped`, the rest still runs;
- each job retries per `retry: {count, delay, backoff}` when its failure is
  retryable, and is stopped at its `timeout` (the stacks kill whole process trees);
- every state change is recorded as it happens, by the run's recorder thread in group
  commits (whatever piled up while the last commit ran), and a job starts only once its
  upstream jobs' results are durable: after a `kill -9` the next apply finds the run
  `running`, keeps its succeeded jobs and runs the others again, so no job whose
  results were recorded runs twice;
- secret values never reach a log: every line is masked before it is written.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from reconciler.core.ids import make_id
from reconciler.core.resource import Resource
from reconciler.providers.base import ApplyContext
from reconciler.stacks.base import JobContext, JobResult
from reconciler.store.runs import JobFinish, JobUpdate, RunEnd, RunStart, now

log = logging.getLogger("reconciler.runner")

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED, CANCELLED = "pending", "running", "succeeded", "failed", "skipped", "cancelled"
MASK = "***"

# Fault injection for the crash tests (see engine/applier.py): "job:WORKFLOW_ID/JOB" kills the process
# after the job is recorded running and before its stack runs.
_CRASH_AT = os.environ.get("RECONCILER_CRASH_AT", "")


def _parse_duration(value) -> float | None:
    if value in (None, ""):
        return None
    from reconciler.core.resources import parse_duration

    return parse_duration(value)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


@dataclass
class RunOutcome:
    run_id: str
    status: str
    message: str
    resumed: bool = False
    jobs: dict[str, str] = field(default_factory=dict)
    rows_in: int | None = None
    rows_out: int | None = None


class RunLake:
    """The lake DuckDB file, opened once per run and shared by its jobs through per-thread cursors."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._conn = None
        self._lock = threading.Lock()
        # workspace schemas known to exist in this run (write_output creates one once, not per job; only a
        # workspace's delete drops its schema, never while a workflow of it runs)
        self.schemas: set[str] = set()
        # lake table -> its row count after this run's last write of it (a reader's rows in, without a count);
        # a depot file dataset and its files' sizes and times -> its row count, once a job counted it
        self.row_counts: dict[str, int] = {}
        # dataset address -> (column, type): lake tables this run wrote, depot datasets a job described (lineage)
        self.columns: dict[str, list[tuple[str, str]]] = {}

    def cursor(self):
        with self._lock:
            if self._conn is None:
                from reconciler.store import lakegate

                self.path.parent.mkdir(parents=True, exist_ok=True)
                lakegate.enter(self.path)  # this process's query database steps aside until close()
                try:
                    self._conn = lakegate.connect_for_writing(self.path)  # another process's reader finishes
                except BaseException:
                    lakegate.leave(self.path)
                    raise
            return self._conn.cursor()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                from reconciler.store import lakegate

                try:
                    lakegate.release(self.path, self._conn)  # closed, or kept open by a daemon for its next run
                finally:
                    self._conn = None
                    lakegate.leave(self.path)


class _Recorder:
    """A run's records, written by one thread in group commits, off the jobs' critical path.

    Each commit of the state database costs an fsync (15-50 ms with jobs running beside it); a job
    used to pay two of them in line. Whatever piles up while a batch commits goes into the next one,
    written table by table for all of it (`Runs.write`), so the recorder does not fall behind jobs
    that finish together. Writes keep their order; `wait()` blocks until they are
    durable, and the run is finished only once every write is. A job does not wait for its upstream
    jobs' results to be durable before it starts: its own records are written after theirs, so no
    crash can leave it recorded as run and an upstream job not (a crash before the upstream's record
    is durable runs both again, as a crash in the upstream's last moments would). Waiting cost a
    commit (~25 ms) on the run's critical path at each dependency.

    A batch costs a dozen DuckDB statements (~1 ms of CPU each, on cores the jobs' queries need) and a
    commit, whatever number of items it holds; so while nobody waits for a write, the recorder lingers
    up to LINGER seconds for more items before it writes (Kafka's `linger.ms`): jobs that finish close
    together share a commit. A `wait()` (a dependent job about to start, the run's end) cuts it short.
    A crash loses at most the last LINGER of finished jobs, which then run again, as a crash during a
    commit already could.

    A finished job's findings (lineage, the tables it wrote into the catalog, quality results) are durable
    with its row as one JSON value; writing them out into their tables is ~10 statements for any number
    of jobs, so it happens once every FINDINGS_EVERY seconds of a long run and at the run's end (with its
    `RunEnd`, in the recorder's last commit), not in every batch: a short run writes them out once. After a
    crash the next apply's run (or the abandoning of the old one) writes them out."""

    LINGER = 0.1
    FINDINGS_EVERY = 2.0

    def __init__(self, store):
        self.store = store
        self.runs = store.runs
        self._cond = threading.Condition()
        self._items: list = []
        self._submitted = 0
        self._done = 0
        self._error: BaseException | None = None
        self._closed = False
        self._waiting = 0  # threads in wait(): write now, do not linger
        self._findings_at = time.monotonic()  # when findings were last written out
        self.costs: dict = {}  # seconds spent writing, by part, and commits (Runs.write); read after close()
        self._thread = threading.Thread(target=self._loop, name="run-recorder", daemon=True)
        self._thread.start()

    def submit(self, item: "RunStart | JobUpdate | JobFinish | RunEnd") -> None:
        with self._cond:
            self._submitted += 1
            self._items.append(item)
            self._cond.notify_all()

    def wait(self) -> None:
        """Until everything submitted so far is durable."""
        with self._cond:
            target = self._submitted
            self._waiting += 1
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._done >= target or self._error is not None)
            finally:
                self._waiting -= 1
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        try:
            self.wait()
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._items or self._closed)
                if not self._items:
                    return
                # linger for more items unless someone waits for these
                self._cond.wait_for(lambda: self._closed or self._waiting, timeout=self.LINGER)
                items, self._items = self._items, []
            findings = time.monotonic() - self._findings_at >= self.FINDINGS_EVERY
            if findings:
                self._findings_at = time.monotonic()
            try:
                try:  # one transaction, each table written once for all of them
                    self.runs.write(items, findings, self.costs)
                except Exception:  # one bad write must not take the others with it: again, one by one
                    for item in items:
                        self.runs.write([item], findings, self.costs)
            except BaseException as exc:
                with self._cond:
                    self._error = exc
                    self._cond.notify_all()
                return
            with self._cond:
                self._done += len(items)
                self._cond.notify_all()


class Masker:
    """Replaces every known secret value in a text by ***."""

    def __init__(self, values=()):
        self.values = sorted({v for v in values if v and len(v) >= 3}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for v in self.values:
            if v in text:
                text = text.replace(v, MASK)
        return text


class JobLog:
    """A job's log: every line masked and time-stamped. The file stays open while the job runs and each
    line is flushed as it is written (`logs --follow` reads along); after close() a late line (a stack's
    stray thread) opens it again for itself."""

    def __init__(self, path: Path, mask: Masker):
        self.path = path
        self.mask = mask
        self.lock = threading.Lock()
        self._file = None
        self._closed = False
        path.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, line: str) -> None:
        stamp = datetime.now(timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        text = self.mask(str(line).rstrip("\n"))
        with self.lock:
            f = self._file or open(self.path, "a", encoding="utf-8")
            try:
                for part in text.split("\n"):
                    f.write(f"{stamp} {part}\n")
                f.flush()
            finally:
                if self._closed:
                    f.close()
                else:
                    self._file = f

    def close(self) -> None:
        with self.lock:
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None


def _load_runtimes(jobs: dict[str, dict]) -> dict[str, bool]:
    """Import the jobs' stack modules before the run starts: loading code (sqlglot for the sql stack's
    column lineage, ~0.2 s) is a cost of the process, paid once by the daemon, not of each run. A stack
    that fails to import fails its job inside the run, as before (the job tries again and records why).
    Returns which jobs are lake-bound (see `to_start`)."""
    from reconciler.stacks.registry import runtime_for

    bound = {}
    for name, job in jobs.items():
        try:
            bound[name] = bool(getattr(runtime_for(job)[2], "lake_bound", False))
        except Exception:  # noqa: BLE001 - reported by the job itself
            bound[name] = False
    return bound


def to_start(ready: list[str], running: list[str], lake_bound: dict[str, bool], parallelism: int,
             lake_slots: int) -> list[str]:
    """Which of the `ready` jobs start now, in order: up to `parallelism` jobs running in all, of which at most
    `lake_slots` (the machine's CPUs) lake-bound ones. A lake-bound job's work is DuckDB queries in this
    process, and DuckDB runs each query on every CPU: more of them at once than there are CPUs only share
    the CPUs, and slow down the one whose dependents wait for it (on 2 CPUs the 20-job bench ran ~0.04 s
    faster with 2 at once than with 4). Jobs that wait on a subprocess or a server still fill `parallelism`."""
    busy, lake = len(running), sum(1 for name in running if lake_bound.get(name))
    started = []
    for name in ready:
        if busy >= parallelism:
            break
        if lake_bound.get(name) and lake >= lake_slots:
            continue
        started.append(name)
        busy += 1
        lake += 1 if lake_bound.get(name) else 0
    return started


def _bookkeeping(costs: dict, results: dict, loading: float, entered: float, first_job: float | None,
                 jobs_done: float) -> dict:
    """A run's account of what it spent beside its jobs' own work, in seconds (run.json's `bookkeeping`).

    `imports`: the stacks' modules loaded before the run (a cost of the process: the daemon pays it once, a
    fresh `apply` for its first run; see _load_runtimes). `head`: from then to the run's first job; `tail`:
    from its last job's end to its records durable (the recorder's last commit, with the findings written
    out); both are on the run's critical path.
    `records` (run and job rows, with their commits: `commits`), `lineage`, `catalog`, `profiles` and
    `quality` (the findings written out into their tables) are the recorder's, on a thread of its own, so
    mostly beside the jobs; `lineage_traced` is column lineage worked out on the jobs' own paths."""
    took = {key: round(value, 4) if isinstance(value, float) else value for key, value in costs.items()}
    took["lineage_traced"] = round(sum(r.lineage_s for r in results.values()), 4)
    took["imports"] = round(entered - loading, 4)
    took["head"] = round((first_job or jobs_done) - entered, 4)
    took["tail"] = round(time.perf_counter() - jobs_done, 4)
    return took


def trigger_key(resource: Resource, repo_dir: Path | None) -> str:
    """What decides whether a workflow must run again: its spec and the repository files its jobs
    reference (python files). The same key with a succeeded run means: up to date."""
    h = hashlib.sha256(resource.hash.encode())
    for job in resource.spec.get("workflow", {}).get("dag", []):
        f = (job.get("spec") or {}).get("file") if job.get("stack") == "python" else None
        if f and repo_dir is not None:
            try:
                h.update(f.encode() + b"\0" + hashlib.sha256((repo_dir / f).read_bytes()).digest())
            except OSError:
                h.update(f.encode() + b"\0missing")
    return h.hexdigest()


class WorkflowRunner:
    def __init__(self, ctx: ApplyContext, parallelism: int = 4, stop: threading.Event | None = None, emitter=None):
        self.ctx = ctx
        self.store = ctx.store
        self.parallelism = max(1, parallelism)
        self.lake_slots = max(1, os.cpu_count() or 1)  # lake-bound jobs at once (see to_start)
        self.stop = stop or threading.Event()
        self.emitter = emitter if emitter is not None else _default_emitter(ctx.environ)

    # -- lookups ---------------------------------------------------------------------------
    def _spec_of(self, rid: str) -> dict | None:
        r = self.ctx.resources.get(rid)
        if r is not None:
            return r.spec
        rec = self.ctx.records.get(rid)
        return rec.spec if rec is not None else None

    def _depots(self) -> dict[str, dict]:
        out = {rec.name: rec.spec for rec in self.ctx.records.values() if rec.type == "depot" and rec.spec}
        out.update({r.name: r.spec for r in self.ctx.resources.values() if r.type == "depot"})
        return out

    def _secret(self, ref: dict, workspace: str) -> tuple[str | None, str | None]:
        from reconciler.providers.secret import resolve_secret

        return resolve_secret(self.ctx, ref, workspace)

    def run_root(self, workflow: Resource, run_id: str) -> Path:
        return self.ctx.run_dir(workflow.workspace) / workflow.name / run_id

    # -- a run -----------------------------------------------------------------------------
    def run(self, workflow: Resource, trigger: str, key: str | None = None) -> RunOutcome:
        loading = time.perf_counter()
        first_job = None  # when the first job was handed to the pool: the run's head is what came before
        repo_dir = self.ctx.repo_dir()
        key = key or trigger_key(workflow, repo_dir)
        jobs = {j["name"]: j for j in workflow.spec["workflow"]["dag"]}
        lake_bound = _load_runtimes(jobs)
        entered = time.perf_counter()
        runs = self.store.runs
        previous = runs.unfinished(workflow.id, key) if trigger != "manual" else None
        done: dict[str, str] = {}
        attempts: dict[str, int] = {}
        start = None
        if previous is not None:
            run_id = previous["run_id"]
            runs.resume_run(run_id)
            for j in runs.jobs(run_id):
                attempts[j["job"]] = j["attempts"] or 0
                if j["status"] == SUCCEEDED:
                    done[j["job"]] = SUCCEEDED
        else:
            runs.abandon_running(workflow.id, "superseded: the workflow changed before this run could resume")
            run_id = new_run_id()
            # the run's record is the recorder's first write (an INSERT and a commit, ~4 ms, off the first job's
            # way); its jobs' records come after it, so no crash leaves a job's record without its run's
            start = RunStart(run_id, workflow.id, self.ctx.commit, key, trigger,
                             [(n, j.get("stack") or f"operator:{j.get('operator')}") for n, j in jobs.items()], now())
        root = self.run_root(workflow, run_id)
        root.mkdir(parents=True, exist_ok=True)
        started = datetime.now(timezone.utc)
        run_info = self._emit_run_start(workflow, run_id, started)

        # secrets of every job, resolved up front so that all of them are masked in every log
        secret_env: dict[str, dict[str, str]] = {}
        runtime_secrets: dict[str, dict[str, str]] = {}
        secret_errors: dict[str, str] = {}
        for name, job in jobs.items():
            env = {}
            for var, ref in (job.get("secrets") or {}).items():
                value, err = self._secret(ref, workflow.workspace)
                if err:
                    secret_errors[name] = err
                else:
                    env[var] = value
            secret_env[name] = env
            runtime_secrets[name] = self._runtime_secrets(job, secret_errors, name)
        # passwords of postgres depots the jobs may read, resolved here so the stacks get them and logs mask them
        for ref in self._depot_password_refs():
            value, err = self._secret(ref, "public")
            if not err:
                for env in runtime_secrets.values():
                    env[f"{ref.get('workspace') or 'public'}/{ref['secret']}"] = value
        masker = Masker([v for env in secret_env.values() for v in env.values()]
                        + [v for env in runtime_secrets.values() for v in env.values()])

        lake = RunLake(self.ctx.lake_path)
        depots = self._depots()  # once per run: it walks every record
        status: dict[str, str] = {n: done.get(n, PENDING) for n in jobs}
        results: dict[str, JobResult] = {}
        recorder = _Recorder(self.store)
        if start is not None:
            recorder.submit(start)
        try:
            with ThreadPoolExecutor(max_workers=self.parallelism, thread_name_prefix=f"run-{workflow.name}") as pool:
                running = {}
                while True:
                    self._skip_downstream(jobs, status, run_id, recorder)
                    if not self.stop.is_set():
                        ready = [n for n, s in status.items() if s == PENDING
                                 and all(status.get(d) == SUCCEEDED for d in jobs[n].get("depends_on") or [])]
                        for name in to_start(ready, list(running.values()), lake_bound, self.parallelism,
                                             self.lake_slots):
                            status[name] = RUNNING
                            fut = pool.submit(self._run_job, workflow, run_id, root, jobs[name], lake, masker,
                                              secret_env[name], runtime_secrets[name], secret_errors.get(name),
                                              attempts.get(name, 0), previous is not None and name in attempts,
                                              run_info, recorder, depots)
                            running[fut] = name
                            first_job = first_job or time.perf_counter()
                    if not running:
                        break
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        name = running.pop(fut)
                        res = fut.result()
                        results[name] = res
                        status[name] = SUCCEEDED if res.ok else FAILED
            if self.stop.is_set():
                for n, s in status.items():
                    if s == PENDING:
                        status[n] = CANCELLED
                        recorder.submit(JobUpdate(run_id, n, dict(status=CANCELLED, message="the run was stopped")))
            jobs_done = time.perf_counter()
            ok, run_status, message = self._summary(jobs, status, results, previous is not None)
            rows_in = sum(r.rows_in or 0 for r in results.values()) if results else None
            rows_out = sum(r.rows_out or 0 for r in results.values()) if results else None
            # the run's end (and its jobs' findings written out) goes in the recorder's last commit
            recorder.submit(RunEnd(run_id, run_status, message, rows_in, rows_out))
        finally:
            # the lake's checkpoint on close (DuckDB, off the GIL) overlaps the recorder's last commits
            try:
                lake.close()
            finally:
                recorder.close()
        bookkeeping = _bookkeeping(recorder.costs, results, loading, entered, first_job, jobs_done)
        self._write_run_file(root, run_id, workflow, run_status, message, status, bookkeeping)
        self._emit_run_end(run_info, ok, None if ok else message)
        return RunOutcome(run_id, run_status, message, previous is not None, status, rows_in, rows_out)

    def _summary(self, jobs: dict, status: dict[str, str], results: dict[str, JobResult],
                 resumed: bool) -> tuple[bool, str, str]:
        """(ok, the run's status, its message) from its jobs' statuses."""
        ok = all(s == SUCCEEDED for s in status.values())
        failed = [n for n, s in status.items() if s == FAILED]
        skipped = [n for n, s in status.items() if s == SKIPPED]
        if ok:
            message = f"{len(jobs)} job(s) succeeded"
            run_status = SUCCEEDED
        elif self.stop.is_set() and not failed:
            message = "stopped before every job ran"
            run_status = CANCELLED
        else:
            first = failed[0]
            message = f"job '{first}' failed: {results[first].message}" if first in results else f"job '{first}' failed"
            if skipped:
                message += f"; skipped: {', '.join(skipped)}"
            run_status = FAILED
        if resumed:
            message += " (resumed after an interruption)"
        return ok, run_status, message

    def _depot_password_refs(self) -> list[dict]:
        return [d["depot"]["password"] for d in self._depots().values()
                if isinstance((d.get("depot") or {}).get("password"), dict)]

    def _runtime_secrets(self, job: dict, errors: dict, name: str) -> dict[str, str]:
        if not job.get("operator"):
            return {}
        spec = self._spec_of(make_id("operator", job["operator"])) or {}
        auth = (spec.get("operator") or {}).get("auth") or {}
        refs = []
        if isinstance(auth.get("bearer"), dict):
            refs.append(auth["bearer"])
        if isinstance(auth.get("basic"), dict) and isinstance(auth["basic"].get("password"), dict):
            refs.append(auth["basic"]["password"])
        out = {}
        for ref in refs:
            value, err = self._secret(ref, "public")
            if err:
                errors[name] = err
            else:
                out[ref["secret"]] = value
        return out

    def _skip_downstream(self, jobs: dict, status: dict, run_id: str, recorder: _Recorder) -> None:
        changed = True
        while changed:
            changed = False
            for name, job in jobs.items():
                if status[name] != PENDING:
                    continue
                bad = [d for d in job.get("depends_on") or [] if status.get(d) in (FAILED, SKIPPED, CANCELLED)]
                if bad:
                    status[name] = SKIPPED
                    recorder.submit(JobUpdate(run_id, name, dict(
                        status=SKIPPED, message=f"skipped: upstream job '{bad[0]}' {status[bad[0]]}")))
                    changed = True

    # -- a job -----------------------------------------------------------------------------
    def _run_job(self, workflow: Resource, run_id: str, root: Path, job: dict, lake: RunLake, masker: Masker,
                 secret_env: dict, runtime_secrets: dict, secret_error: str | None, prior_attempts: int,
                 interrupted: bool, run_info, recorder: _Recorder, depots: dict[str, dict]) -> JobResult:
        from reconciler.stacks.registry import BUILTIN, runtime_for

        name = job["name"]
        log_path = root / f"{name}.log"
        job_log = JobLog(log_path, masker)
        try:
            retry = job.get("retry") or {}
            count = int(retry.get("count") or 0)
            delay = _parse_duration(retry.get("delay")) or 0.0
            backoff = float(retry.get("backoff") or 1)
            timeout = _parse_duration(job.get("timeout"))
            if interrupted and prior_attempts:
                job_log(f"job '{name}' was interrupted (attempt {prior_attempts}); running it again")
            try:
                kind, runtime_name, stack = runtime_for(job)
            except Exception as e:  # a stack module that fails to import is our bug: the job fails, the run goes on
                return self._job_failed(run_id, name, job_log, f"internal error loading stack: {e}", prior_attempts,
                                        recorder)
            custom = kind == "operator" or runtime_name not in BUILTIN
            runtime_spec = self._spec_of(make_id(kind, runtime_name)) if custom else None
            if secret_error:
                return self._job_failed(run_id, name, job_log, secret_error, prior_attempts, recorder)
            result = JobResult(False, "not run")
            attempt = prior_attempts
            for n in range(count + 1):
                attempt = prior_attempts + n + 1
                started = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
                recorder.submit(JobUpdate(run_id, name, dict(
                    status=RUNNING, attempts=attempt, started_at=started, log_path=str(log_path),
                    message="retried after an interruption" if interrupted and n == 0 else None)))
                if _CRASH_AT == f"job:{workflow.id}/{name}":
                    recorder.wait()  # the fault injection crashes with what a crash at this point would have recorded
                    os.kill(os.getpid(), signal.SIGKILL)
                job_dir = root / name / f"attempt-{attempt}"
                if getattr(stack, "scratch", True):
                    job_dir.mkdir(parents=True, exist_ok=True)
                ctx = JobContext(workflow=workflow.name, workflow_id=workflow.id, workspace=workflow.workspace, job=name,
                                 stack=runtime_name if kind == "stack" else f"operator:{runtime_name}",
                                 spec=job.get("spec") or {}, run_id=run_id, attempt=attempt, commit=self.ctx.commit,
                                 state_dir=self.ctx.state_dir, repo_dir=self.ctx.repo_dir(), job_dir=job_dir,
                                 run_dir=self.ctx.run_dir(workflow.workspace), lake=lake, depots=depots,
                                 environ=self.ctx.environ, secret_env=secret_env, runtime_spec=runtime_spec,
                                 runtime_secrets=runtime_secrets, log=job_log,
                                 deadline=time.monotonic() + timeout if timeout else None, cancel=self.stop)
                job_log(f"attempt {attempt}: {ctx.stack} job '{name}' of run {run_id} started")
                job_started = time.monotonic()
                self._emit_job(run_info, workflow, name, ctx.stack, None)
                try:
                    result = stack.run(ctx)
                except Exception as e:  # a bug in a stack: this job's failure, with the traceback in its log
                    job_log(traceback.format_exc())
                    result = JobResult(False, f"internal error in the {ctx.stack} stack: {type(e).__name__}: {e}")
                result.message = masker(result.message or "")
                self._emit_job(run_info, workflow, name, ctx.stack, result)
                took = time.monotonic() - job_started
                if result.ok:
                    job_log(f"attempt {attempt} succeeded in {took:.2f}s"
                            + (f"; rows in {result.rows_in}, out {result.rows_out}" if result.rows_out is not None else ""))
                    break
                job_log(f"attempt {attempt} failed after {took:.2f}s: {result.message}")
                if not result.retryable or n == count or self.stop.is_set():
                    break
                wait_s = delay * (backoff ** n)
                job_log(f"retrying in {wait_s:g}s ({count - n} retr{'y' if count - n == 1 else 'ies'} left)")
                if self.stop.wait(wait_s):
                    break
            column_tags = {o["dataset"]: o["column_tags"] for o in (job.get("spec") or {}).get("outputs") or []
                           if isinstance(o, dict) and o.get("column_tags") and o.get("dataset")}
            recorder.submit(JobFinish(run_id, workflow.id, name, result, attempts=attempt,
                                      owner=workflow.spec.get("owner"), workspace=workflow.workspace,
                                      tags=list(workflow.spec.get("tags") or []), column_tags=column_tags,
                                      ended=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
                                      started_at=started, log_path=str(log_path)))
            return result
        finally:
            job_log.close()

    def _job_failed(self, run_id: str, name: str, job_log: JobLog, message: str, attempts: int,
                    recorder: _Recorder) -> JobResult:
        job_log(message)
        recorder.submit(JobUpdate(run_id, name, dict(
            status=FAILED, attempts=attempts, message=message,
            ended_at=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))))
        return JobResult(False, message, retryable=False)

    def _write_run_file(self, root: Path, run_id: str, workflow: Resource, status: str, message: str,
                        jobs: dict[str, str], bookkeeping: dict) -> None:
        """run.json beside the logs: `logs --follow` reads it without opening the state database. Also the
        run's account of its own bookkeeping (`_bookkeeping`): what `bench/workflow_bench.py` reports."""
        data = {"run_id": run_id, "workflow": workflow.id, "status": status, "message": message, "jobs": jobs,
                "bookkeeping": bookkeeping}
        tmp = root / ".run.json.tmp"
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, root / "run.json")

    # -- OpenLineage (never breaks a run) --------------------------------------------------------
    def _emit_run_start(self, workflow: Resource, run_id: str, started: datetime):
        if self.emitter is None:
            return None
        try:
            from reconciler.lineage.openlineage import RunInfo

            info = RunInfo(run_id=run_id, workflow_id=workflow.id, workflow=workflow.name,
                           workspace=workflow.workspace, commit=self.ctx.commit, started_at=started, ended_at=None)
            self.emitter.run_started(info)
            return info
        except Exception:  # lineage is best effort: a broken emitter must not fail the run
            log.warning("OpenLineage: could not emit the run start", exc_info=True)
            return None

    def _emit_job(self, info, workflow: Resource, job: str, stack: str, result: JobResult | None) -> None:
        if self.emitter is None or info is None:
            return
        try:
            from reconciler.lineage.openlineage import JobInfo, job_run_id

            now = datetime.now(timezone.utc)
            ji = JobInfo(name=job, stack=stack, run_id=job_run_id(info.run_id, job),
                         started_at=now, ended_at=now if result else None,
                         inputs=list(result.inputs) if result else [],
                         outputs=[o.address for o in result.outputs] if result else [])
            if result is None:
                self.emitter.job_started(info, ji)
            else:
                self.emitter.job_finished(info, ji, result)
        except Exception:
            log.warning("OpenLineage: could not emit a job event", exc_info=True)

    def _emit_run_end(self, info, ok: bool, error: str | None) -> None:
        if self.emitter is None or info is None:
            return
        try:
            info.ended_at = datetime.now(timezone.utc)
            self.emitter.run_finished(info, ok, error)
        except Exception:
            log.warning("OpenLineage: could not emit the run end", exc_info=True)


def _default_emitter(environ: dict):
    """OpenLineage from RECONCILER_OPENLINEAGE_URL / RECONCILER_OPENLINEAGE_FILE (the daemon adds its config)."""
    if not (environ.get("RECONCILER_OPENLINEAGE_URL") or environ.get("RECONCILER_OPENLINEAGE_FILE")):
        return None
    try:
        from reconciler.lineage.openlineage import LineageEmitter, config_from_env

        return LineageEmitter(config_from_env(environ))
    except Exception:
        log.warning("OpenLineage: configuration ignored", exc_info=True)
        return None
