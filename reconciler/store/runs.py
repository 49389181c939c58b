"""Workflow runs and jobs, lineage, quality results and column profiles (`store.runs`).

Run records are written as they happen: after a `kill -9` the next apply reads them
to resume an interrupted run without running a finished job of the same commit again.
The runner's recorder hands over whatever piled up while it committed the last batch
(`write`): one transaction, one UPDATE of the job rows for all of it. A finished job's
row holds its findings (lineage, the lake tables it wrote, quality results, profiles)
as one JSON value until they are written out into their tables, for many jobs at once
(`_write_findings`: at the run's end, now and then in a long run, and when a crashed
run is resumed or abandoned). Like catalog writes, they do not move the state serial.
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from reconciler.store.bulk import insert_rows
from reconciler.store.bulk import quoted as _quoted

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.stacks.base import JobResult
    from reconciler.store.state import StateStore

RUN_COLUMNS = ("run_id", "workflow_id", "commit", "trigger_key", "trigger", "status", "message", "started_at",
               "ended_at", "rows_in", "rows_out", "resumed")
JOB_COLUMNS = ("run_id", "job", "stack", "status", "attempts", "started_at", "ended_at", "rows_in", "rows_out",
               "message", "log_path", "external_id")
_JOB_TYPES = {"stack": "VARCHAR", "status": "VARCHAR", "attempts": "INTEGER", "started_at": "VARCHAR",
              "ended_at": "VARCHAR", "rows_in": "BIGINT", "rows_out": "BIGINT", "message": "VARCHAR",
              "log_path": "VARCHAR", "external_id": "VARCHAR"}
_CHECK_COLUMNS = ("run_id", "job", "dataset", "name", "check_type", "severity", "passed", "failing_rows", "sample",
                  "message", "columns", "at")
_CHECK_TYPES = ("VARCHAR",) * 6 + ("BOOLEAN", "BIGINT") + ("VARCHAR",) * 4


@contextmanager
def _timed(costs: dict | None, key: str):
    """Add the seconds the block takes to costs[key] (a run's bookkeeping, see Runs.write); None: not timed."""
    if costs is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        costs[key] = costs.get(key, 0.0) + time.perf_counter() - started


@dataclass
class JobUpdate:
    """Set some columns of one job's row (status, attempts, started_at, message...)."""
    run_id: str
    job: str
    values: dict


@dataclass
class JobFinish:
    """A job's final record and what it found (see Runs.finish_job)."""
    run_id: str
    workflow_id: str
    job: str
    result: "JobResult"
    attempts: int
    owner: str | None
    workspace: str
    tags: list[str]
    column_tags: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    ended: str | None = None
    # the last attempt's start and log, as its running update set them: a finished row then sets the same
    # columns whether that update went in an earlier batch or in this one (one UPDATE for all of them)
    started_at: str | None = None
    log_path: str | None = None


@dataclass
class RunStart:
    """A new run with every job pending (see Runs.start_run); `started_at`: when it started."""
    run_id: str
    workflow_id: str
    commit: str | None
    trigger_key: str
    trigger: str
    jobs: list[tuple[str, str]]  # (name, stack)
    started_at: str


@dataclass
class RunEnd:
    """A run's end: its status and totals, with its jobs' pending findings written out (see Runs.write)."""
    run_id: str
    status: str
    message: str
    rows_in: int | None
    rows_out: int | None


@dataclass
class _Found:
    """A finished job's findings as its row keeps them until they are written out (see Runs.write)."""
    run_id: str
    workflow_id: str
    job: str
    owner: str | None
    workspace: str
    tags: list[str]
    column_tags: dict[str, dict[str, list[str]]]
    result: dict  # ok, inputs, outputs [{address, columns, row_count}], column_lineage, profiles, checks


def _findings_json(item: JobFinish, ended: str) -> str | None:
    """What a finished job found, as one JSON value: everything of it that goes into other tables. None
    for a failed job without quality results (it found nothing and replaces nothing)."""
    r = item.result
    if not (r.ok or r.checks):
        return None
    return json.dumps({
        "run_id": item.run_id, "workflow_id": item.workflow_id, "job": item.job, "owner": item.owner,
        "workspace": item.workspace, "tags": list(item.tags), "column_tags": item.column_tags, "ended": ended,
        "result": {"ok": r.ok, "inputs": list(r.inputs),
                   "outputs": [{"address": o.address, "columns": [list(c) for c in o.columns],
                                "row_count": o.row_count} for o in r.outputs],
                   "column_lineage": r.column_lineage, "profiles": r.profiles,
                   "checks": [asdict(c) for c in r.checks]}}, default=str)


def _finish_from_json(text: str) -> tuple[_Found, str]:
    data = json.loads(text)
    ended = data.pop("ended")
    return _Found(**data), ended


def _q(column: str) -> str:
    return f'"{column}"'


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _inherited_tags(conn, column_lineage: dict, batch: dict[str, dict[str, set[str]]],
                   looked_up: dict[str, dict[str, set[str]]]) -> dict[str, dict[str, set[str]]]:
    """Column tags follow the data: an output column carries the tags of every column it was computed
    from (a `pii` card number stays `pii` after a CAST), so masks by tag keep holding downstream.
    `batch`: the columns' tags of datasets written earlier in the same transaction (they replace what
    the catalog held); `looked_up`: the catalog's, filled here for the addresses it lacks."""
    sources = {src for cols in column_lineage.values() for srcs in cols.values() for src, _ in srcs}
    missing = sorted(a for a in sources if a not in batch and a not in looked_up)
    if missing:
        for address in missing:
            looked_up[address] = {}
        rows = conn.execute("SELECT address, name, tags FROM columns WHERE list_contains($1::VARCHAR[], address) "
                            "AND tags IS NOT NULL AND tags <> '[]'", [missing]).fetchall()
        for a, n, t in rows:
            looked_up[a][n.lower()] = set(json.loads(t))
    out: dict[str, dict[str, set[str]]] = {}
    for target, cols in column_lineage.items():
        for col, srcs in cols.items():
            found = set().union(*((batch[s] if s in batch else looked_up[s]).get(c.lower(), ()) for s, c in srcs))
            if found:
                out.setdefault(target, {})[col] = found
    return out


class Runs:
    def __init__(self, store: "StateStore"):
        self._store = store

    def _tx(self):
        return self._store._transaction(now(), bump_serial=False)

    def _query(self, sql: str, params=()) -> list[tuple]:
        with self._store._lock:
            return self._store._conn.execute(sql, list(params)).fetchall()

    # ---- runs ----------------------------------------------------------------------------
    def start_run(self, run_id: str, workflow_id: str, commit: str | None, trigger_key: str, trigger: str,
                  jobs: list[tuple[str, str]]) -> None:
        """A new run with every job pending; jobs: (name, stack)."""
        self.write([RunStart(run_id, workflow_id, commit, trigger_key, trigger, jobs, now())])

    @staticmethod
    def _start(conn, start: RunStart) -> None:
        conn.execute(f"INSERT INTO runs ({_quoted(RUN_COLUMNS)}) VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, NULL, "
                     "NULL, NULL, 0)", [start.run_id, start.workflow_id, start.commit, start.trigger_key,
                                        start.trigger, start.started_at])
        insert_rows(conn, "jobs", ("run_id", "job", "stack", "status", "attempts"),
                    ("VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR", "INTEGER"),
                    [(start.run_id, name, stack, "pending", 0) for name, stack in start.jobs])

    def resume_run(self, run_id: str) -> None:
        with self._tx() as (conn, _):
            conn.execute("UPDATE runs SET resumed = resumed + 1, status = 'running', "
                         "message = 'resumed after an interruption' WHERE run_id = ?", [run_id])

    def finish_run(self, run_id: str, status: str, message: str, rows_in: int | None, rows_out: int | None) -> None:
        """The run's end, with every finding of its jobs still pending written out in the same transaction."""
        self.write([RunEnd(run_id, status, message, rows_in, rows_out)])

    def run(self, run_id: str) -> dict | None:
        rows = self._query(f"SELECT {_quoted(RUN_COLUMNS)} FROM runs WHERE run_id = ?", [run_id])
        return dict(zip(RUN_COLUMNS, rows[0])) if rows else None

    def runs(self, workflow_id: str | None = None, limit: int = 50) -> list[dict]:
        sql = f"SELECT {_quoted(RUN_COLUMNS)} FROM runs"
        params: list = []
        if workflow_id:
            sql += " WHERE workflow_id = ?"
            params.append(workflow_id)
        rows = self._query(sql + " ORDER BY started_at DESC, run_id DESC LIMIT ?", params + [limit])
        return [dict(zip(RUN_COLUMNS, r)) for r in rows]

    def unfinished(self, workflow_id: str, trigger_key: str) -> dict | None:
        """A run of this exact spec that a crash left `running`: it is resumed, not started again."""
        rows = self._query(f"SELECT {_quoted(RUN_COLUMNS)} FROM runs WHERE workflow_id = ? AND trigger_key = ? "
                           "AND status = 'running' ORDER BY started_at DESC LIMIT 1", [workflow_id, trigger_key])
        return dict(zip(RUN_COLUMNS, rows[0])) if rows else None

    def last_success(self, workflow_id: str) -> dict | None:
        rows = self._query(f"SELECT {_quoted(RUN_COLUMNS)} FROM runs WHERE workflow_id = ? AND status = 'succeeded' "
                           "ORDER BY started_at DESC LIMIT 1", [workflow_id])
        return dict(zip(RUN_COLUMNS, rows[0])) if rows else None

    def abandon_running(self, workflow_id: str, message: str) -> None:
        """Runs of an older spec that a crash left `running` will never resume: mark them cancelled. What their
        finished jobs found (tables they wrote, their lineage) is written out first: it is true all the same."""
        with self._tx() as (conn, _):
            self._write_findings(conn, [r for r, in conn.execute(
                "SELECT run_id FROM runs WHERE workflow_id = ? AND status = 'running'", [workflow_id]).fetchall()])
            conn.execute("UPDATE jobs SET status = 'cancelled', ended_at = ? WHERE status IN ('running', 'pending') "
                         "AND run_id IN (SELECT run_id FROM runs WHERE workflow_id = ? AND status = 'running')",
                         [now(), workflow_id])
            conn.execute("UPDATE runs SET status = 'cancelled', message = ?, ended_at = ? "
                         "WHERE workflow_id = ? AND status = 'running'", [message, now(), workflow_id])

    # ---- jobs ----------------------------------------------------------------------------
    def jobs(self, run_id: str) -> list[dict]:
        rows = self._query(f"SELECT {_quoted(JOB_COLUMNS)} FROM jobs WHERE run_id = ? ORDER BY started_at NULLS LAST, job",
                           [run_id])
        return [dict(zip(JOB_COLUMNS, r)) for r in rows]

    def update_job(self, run_id: str, job: str, **values) -> None:
        if values:
            self.write([JobUpdate(run_id, job, values)])

    # ---- what a finished job found ---------------------------------------------------------
    def finish_job(self, run_id: str, workflow_id: str, job: str, result: "JobResult", *, attempts: int,
                   owner: str | None, workspace: str, tags: list[str],
                   column_tags: dict[str, dict[str, list[str]]] | None = None, ended: str | None = None) -> None:
        """The job's final record and, when it succeeded, what it found (lineage edges, column lineage,
        quality results, profiles, the lake tables it wrote) in ONE transaction: a crash leaves either
        all of it or a job to run again. Lineage of a job replaces what the same job recorded before.
        `ended`: when the job really ended (it may be recorded a little later, in a group commit)."""
        self.write([JobFinish(run_id, workflow_id, job, result, attempts, owner, workspace, tags,
                              column_tags or {}, ended)])

    def write(self, items: list[RunStart | JobUpdate | JobFinish | RunEnd], findings: bool = True,
              costs: dict | None = None) -> None:
        """Run starts, job updates, finished jobs and run ends, in order, in one transaction.

        A finished job's row takes its findings (lineage, the lake tables it wrote, quality results,
        profiles) as one JSON value, durable with its status. `findings`: also write every pending
        finding of these runs out into its tables now (else that waits for the run's end or a crash's
        recovery: ~10 statements for any number of jobs instead of per batch). A run's end always writes
        out its findings first.

        `costs` (the runner's account of its bookkeeping): seconds added under `records` (the run and job
        rows and the commit), `lineage`, `catalog`, `profiles` and `quality` (the findings written out), and
        one more under `commits`."""
        if items:
            ends = [item for item in items if isinstance(item, RunEnd)]
            started = time.perf_counter()
            parts = {} if costs is not None else None
            with self._tx() as (conn, _):
                for item in items:
                    if isinstance(item, RunStart):  # a run's start comes before any of its jobs' updates
                        self._start(conn, item)
                self._write(conn, [item for item in items if not isinstance(item, (RunStart, RunEnd))])
                self._write_findings(conn, sorted({item.run_id for item in (items if findings else ends)}), parts)
                for end in ends:
                    conn.execute("UPDATE runs SET status = ?, message = ?, ended_at = ?, rows_in = ?, rows_out = ? "
                                 "WHERE run_id = ?", [end.status, end.message, now(), end.rows_in, end.rows_out,
                                                      end.run_id])
            if costs is not None:
                for key, took in parts.items():
                    costs[key] = costs.get(key, 0.0) + took
                costs["records"] = (costs.get("records", 0.0) + time.perf_counter() - started
                                    - sum(parts.values()))
                costs["commits"] = costs.get("commits", 0) + 1

    def _write(self, conn, items: list[JobUpdate | JobFinish]) -> None:
        # each job row's columns as the items leave them, in order (a later value wins)
        rows: dict[tuple[str, str], dict] = {}
        for item in items:
            if isinstance(item, JobFinish):
                t = item.ended or now()
                r = item.result
                values = {"status": "succeeded" if r.ok else "failed", "attempts": item.attempts, "ended_at": t,
                          "rows_in": r.rows_in, "rows_out": r.rows_out, "message": r.message or None,
                          "external_id": r.external_id, "findings": _findings_json(item, t)}
                if item.started_at is not None:
                    values.update(started_at=item.started_at, log_path=item.log_path)
            else:
                values = item.values
            rows.setdefault((item.run_id, item.job), {}).update(values)
        self._update_jobs(conn, rows)

    def _write_findings(self, conn, run_ids: list[str], costs: dict | None = None) -> None:
        """The pending findings of these runs, in the order their jobs ended (an upstream job's before its
        dependents': a column's tags follow the data downstream), written out and cleared in one go."""
        if not run_ids:
            return
        pending = conn.execute("SELECT findings FROM jobs WHERE list_contains($1::VARCHAR[], run_id) AND "
                               "findings IS NOT NULL ORDER BY ended_at, job", [run_ids]).fetchall()
        if not pending:
            return
        self._write_out(conn, [_finish_from_json(text) for text, in pending], costs)
        conn.execute("UPDATE jobs SET findings = NULL WHERE list_contains($1::VARCHAR[], run_id) "
                     "AND findings IS NOT NULL", [run_ids])

    def _write_out(self, conn, finished: list[tuple[_Found, str]], costs: dict | None = None) -> None:
        with _timed(costs, "quality"):
            # a failed quality job still found something: its failing checks count against quality SLOs
            insert_rows(conn, "quality_results", _CHECK_COLUMNS, _CHECK_TYPES, [
                (f.run_id, f.job, c["dataset"], c["name"], c["check"], c["severity"], c["passed"],
                 c["failing_rows"], json.dumps(c["sample"], default=str), c["message"], json.dumps(c["columns"]), t)
                for f, t in finished for c in f.result["checks"]])
        done = {(f.workflow_id, f.job): (f, t) for f, t in finished if f.result["ok"]}  # the last of a job wins
        if not done:
            return
        with _timed(costs, "lineage"):
            self._write_lineage(conn, done)
        with _timed(costs, "profiles"):
            self._write_profiles(conn, done)
        with _timed(costs, "catalog"):
            self._write_catalog(conn, done)

    @staticmethod
    def _write_lineage(conn, done: dict) -> None:
        for table in ("lineage_edges", "column_lineage"):
            for workflow_id in {w for w, _ in done}:
                jobs = [j for w, j in done if w == workflow_id]
                conn.execute(f"DELETE FROM {table} WHERE workflow_id = $1 AND list_contains($2::VARCHAR[], job)",
                             [workflow_id, jobs])
        edges, col_edges = [], []
        for f, t in done.values():
            outputs = [o["address"] for o in f.result["outputs"]]
            edges += [(src, dst, f.workflow_id, f.job, f.run_id, t) for src in f.result["inputs"] for dst in outputs]
            col_edges += [(target, col, src, src_col, f.workflow_id, f.job, f.run_id)
                          for target, cols in f.result["column_lineage"].items()
                          for col, sources in cols.items() for src, src_col in sources]
        insert_rows(conn, "lineage_edges", ("source", "target", "workflow_id", "job", "run_id", "at"),
                    ("VARCHAR",) * 6, edges)
        insert_rows(conn, "column_lineage", ("target", "target_column", "source", "source_column",
                                             "workflow_id", "job", "run_id"), ("VARCHAR",) * 7, col_edges)

    @staticmethod
    def _write_profiles(conn, done: dict) -> None:
        profiles = {address: (stats, f.run_id, t) for f, t in done.values()
                    for address, stats in f.result["profiles"].items()}
        if profiles:
            conn.execute("DELETE FROM column_profiles WHERE list_contains($1::VARCHAR[], address)", [list(profiles)])
            insert_rows(conn, "column_profiles", ("address", "column_name", "stats", "run_id", "at"),
                        ("VARCHAR",) * 5, [(address, s.get("column"), json.dumps(s, default=str), run_id, t)
                                           for address, (stats, run_id, t) in profiles.items() for s in stats])

    def _write_catalog(self, conn, done: dict) -> None:
        # the lake tables written, each job's in turn: a job's columns inherit the tags of the columns
        # they come from, also of a table an earlier job of this batch wrote
        written: dict[str, dict[str, set[str]]] = {}  # address -> column (lower case) -> tags, this batch
        looked_up: dict[str, dict[str, set[str]]] = {}
        by_owner: dict[str, list[dict]] = {}
        for f, _ in done.values():
            if not f.result["outputs"]:
                continue
            inherited = _inherited_tags(conn, f.result["column_lineage"], written, looked_up)
            datasets = []
            for o in f.result["outputs"]:
                address = o["address"]
                columns = [{"name": n, "type": ty,
                            "tags": sorted(set(inherited.get(address, {}).get(n, ()))
                                           | set(f.column_tags.get(address, {}).get(n, ())))}
                           for n, ty in o["columns"]]
                written[address] = {c["name"].lower(): set(c["tags"]) for c in columns}
                datasets.append({"address": address, "kind": "lake", "workspace": f.workspace, "format": "table",
                                 "location": f"{f.workspace}.{address.rsplit('/', 1)[-1]}",
                                 "row_count": o["row_count"], "tags": f.tags, "owner": f.owner, "last_run": f.run_id,
                                 "columns": columns})
            by_owner.setdefault(f.workflow_id, []).extend(datasets)
        for owner_id, datasets in by_owner.items():
            self._store.catalog.put_in(conn, owner_id, datasets)

    @staticmethod
    def _update_jobs(conn, rows: dict[tuple[str, str], dict]) -> None:
        """One UPDATE for every group of rows that set the same columns."""
        groups: dict[tuple[str, ...], list[tuple[tuple[str, str], dict]]] = {}
        for key, values in rows.items():
            if values:
                groups.setdefault(tuple(sorted(values)), []).append((key, values))
        for columns, members in groups.items():
            if len(members) == 1:
                (run_id, job), values = members[0]
                conn.execute(f"UPDATE jobs SET {', '.join(f'{_q(c)} = ?' for c in columns)} "
                             "WHERE run_id = ? AND job = ?", [*(values[c] for c in columns), run_id, job])
                continue
            select = ", ".join(["unnest($1::VARCHAR[]) AS run_id", "unnest($2::VARCHAR[]) AS job"]
                               + [f"unnest(${i}::{_JOB_TYPES.get(c, 'VARCHAR')}[]) AS {_q(c)}" for i, c in enumerate(columns, 3)])
            conn.execute(f"UPDATE jobs SET {', '.join(f'{_q(c)} = v.{_q(c)}' for c in columns)} FROM "
                         f"(SELECT {select}) AS v WHERE jobs.run_id = v.run_id AND jobs.job = v.job",
                         [[k[0] for k, _ in members], [k[1] for k, _ in members]]
                         + [[v[c] for _, v in members] for c in columns])

    def forget_workflow(self, workflow_id: str) -> None:
        with self._tx() as (conn, _):
            conn.execute("DELETE FROM lineage_edges WHERE workflow_id = ?", [workflow_id])
            conn.execute("DELETE FROM column_lineage WHERE workflow_id = ?", [workflow_id])

    def lineage_edges(self) -> list[dict]:
        rows = self._query("SELECT source, target, workflow_id, job, run_id, \"at\" FROM lineage_edges")
        return [dict(zip(("source", "target", "workflow_id", "job", "run_id", "at"), r)) for r in rows]

    def column_lineage(self, target: str | None = None) -> list[dict]:
        sql = "SELECT target, target_column, source, source_column, workflow_id, job FROM column_lineage"
        rows = self._query(sql + (" WHERE target = ?" if target else "") + " ORDER BY target, target_column, source",
                           [target] if target else [])
        return [dict(zip(("target", "target_column", "source", "source_column", "workflow_id", "job"), r)) for r in rows]

    def quality(self, dataset: str | None = None, run_id: str | None = None, limit: int = 200) -> list[dict]:
        cols = ("run_id", "job", "dataset", "name", "check_type", "severity", "passed", "failing_rows", "sample",
                "message", "columns", "at")
        sql = f"SELECT {_quoted(cols)} FROM quality_results WHERE 1 = 1"
        params: list = []
        if dataset:
            sql += " AND dataset = ?"
            params.append(dataset)
        if run_id:
            sql += " AND run_id = ?"
            params.append(run_id)
        rows = self._query(sql + ' ORDER BY "at" DESC, name LIMIT ?', params + [limit])
        out = []
        for r in rows:
            d = dict(zip(cols, r))
            d["sample"] = json.loads(d["sample"]) if d["sample"] else []
            d["columns"] = json.loads(d["columns"]) if d["columns"] else []
            out.append(d)
        return out

    def profiles(self, address: str) -> list[dict]:
        rows = self._query('SELECT stats FROM column_profiles WHERE address = ? ORDER BY column_name', [address])
        return [json.loads(r[0]) for r in rows]
