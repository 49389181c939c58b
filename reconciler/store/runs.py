"""Workflow runs and jobs, lineage, quality results and column profiles (`store.runs`).

Run records are written as they happen, not batched: after a `kill -9` the next
apply reads them to resume an interrupted run without running a finished job of
the same commit again. Like catalog writes, they do not move the state serial.
"""
from __future__ import annotations

import json
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


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _inherited_tags(conn, column_lineage: dict) -> dict[str, dict[str, set[str]]]:
    """Column tags follow the data: an output column carries the tags of every column it was computed
    from (a `pii` card number stays `pii` after a CAST), so masks by tag keep holding downstream."""
    sources = {(src, col) for cols in column_lineage.values() for srcs in cols.values() for src, col in srcs}
    if not sources:
        return {}
    rows = conn.execute("SELECT address, name, tags FROM columns WHERE address IN (SELECT unnest($1::VARCHAR[]))",
                        [sorted({s for s, _ in sources})]).fetchall()
    known = {(a, n.lower()): json.loads(t) if t else [] for a, n, t in rows}
    out: dict[str, dict[str, set[str]]] = {}
    for target, cols in column_lineage.items():
        for col, srcs in cols.items():
            found = set().union(*(known.get((s, c.lower()), []) for s, c in srcs)) if srcs else set()
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
        t = now()
        with self._tx() as (conn, _):
            conn.execute(f"INSERT INTO runs ({_quoted(RUN_COLUMNS)}) VALUES (?, ?, ?, ?, ?, 'running', NULL, ?, NULL, "
                         "NULL, NULL, 0)", [run_id, workflow_id, commit, trigger_key, trigger, t])
            for name, stack in jobs:
                conn.execute(f"INSERT INTO jobs ({_quoted(JOB_COLUMNS)}) VALUES (?, ?, ?, 'pending', 0, NULL, NULL, "
                             "NULL, NULL, NULL, NULL, NULL)", [run_id, name, stack])

    def resume_run(self, run_id: str) -> None:
        with self._tx() as (conn, _):
            conn.execute("UPDATE runs SET resumed = resumed + 1, status = 'running', "
                         "message = 'resumed after an interruption' WHERE run_id = ?", [run_id])

    def finish_run(self, run_id: str, status: str, message: str, rows_in: int | None, rows_out: int | None) -> None:
        with self._tx() as (conn, _):
            conn.execute("UPDATE runs SET status = ?, message = ?, ended_at = ?, rows_in = ?, rows_out = ? "
                         "WHERE run_id = ?", [status, message, now(), rows_in, rows_out, run_id])

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
        """Runs of an older spec that a crash left `running` will never resume: mark them cancelled."""
        with self._tx() as (conn, _):
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
        if not values:
            return
        sets = ", ".join(f'"{k}" = ?' for k in values)
        with self._tx() as (conn, _):
            conn.execute(f"UPDATE jobs SET {sets} WHERE run_id = ? AND job = ?", list(values.values()) + [run_id, job])

    # ---- what a finished job found ---------------------------------------------------------
    def finish_job(self, run_id: str, workflow_id: str, job: str, result: "JobResult", *, attempts: int,
                   owner: str | None, workspace: str, tags: list[str],
                   column_tags: dict[str, dict[str, list[str]]] | None = None, ended: str | None = None) -> None:
        """The job's final record and, when it succeeded, what it found (lineage edges, column lineage,
        quality results, profiles, the lake tables it wrote) in ONE transaction: a crash leaves either
        all of it or a job to run again. Lineage of a job replaces what the same job recorded before.
        `ended`: when the job really ended (it may be recorded a little later, in a group commit)."""
        t = ended or now()
        with self._tx() as (conn, _):
            conn.execute('UPDATE jobs SET status = ?, attempts = ?, ended_at = ?, rows_in = ?, rows_out = ?, '
                         'message = ?, external_id = ? WHERE run_id = ? AND job = ?',
                         ["succeeded" if result.ok else "failed", attempts, t, result.rows_in, result.rows_out,
                          result.message or None, result.external_id, run_id, job])
            if not result.ok:
                # a failed quality job still found something: its failing checks count against quality SLOs
                self._insert_checks(conn, run_id, job, result.checks, t)
                return
            outputs = [o.address for o in result.outputs]
            conn.execute("DELETE FROM lineage_edges WHERE workflow_id = ? AND job = ?", [workflow_id, job])
            conn.execute("DELETE FROM column_lineage WHERE workflow_id = ? AND job = ?", [workflow_id, job])
            edges = [(src, dst, workflow_id, job, run_id, t) for src in result.inputs for dst in outputs]
            insert_rows(conn, "lineage_edges", ("source", "target", "workflow_id", "job", "run_id", "at"),
                        ("VARCHAR",) * 6, edges)
            col_edges = [(target, col, src, src_col, workflow_id, job, run_id)
                         for target, cols in result.column_lineage.items()
                         for col, sources in cols.items() for src, src_col in sources]
            insert_rows(conn, "column_lineage", ("target", "target_column", "source", "source_column",
                                                 "workflow_id", "job", "run_id"), ("VARCHAR",) * 7, col_edges)
            self._insert_checks(conn, run_id, job, result.checks, t)
            for address, stats in result.profiles.items():
                conn.execute("DELETE FROM column_profiles WHERE address = ?", [address])
                for s in stats:
                    conn.execute("INSERT INTO column_profiles VALUES (?, ?, ?, ?, ?)",
                                 [address, s.get("column"), json.dumps(s, default=str), run_id, t])
            if result.outputs:
                inherited = _inherited_tags(conn, result.column_lineage)
                self._store.catalog.put_in(conn, workflow_id, [
                    {"address": o.address, "kind": "lake", "workspace": workspace, "format": "table",
                     "location": f"{workspace}.{o.address.rsplit('/', 1)[-1]}", "row_count": o.row_count,
                     "tags": tags, "owner": owner, "last_run": run_id,
                     "columns": [{"name": n, "type": ty,
                                  "tags": sorted(set(inherited.get(o.address, {}).get(n, ()))
                                                 | set((column_tags or {}).get(o.address, {}).get(n, ())))}
                                 for n, ty in o.columns]} for o in result.outputs])

    @staticmethod
    def _insert_checks(conn, run_id: str, job: str, checks, t: str) -> None:
        for c in checks or ():
            conn.execute("INSERT INTO quality_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         [run_id, job, c.dataset, c.name, c.check, c.severity, c.passed, c.failing_rows,
                          json.dumps(c.sample, default=str), c.message, json.dumps(c.columns), t])

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
