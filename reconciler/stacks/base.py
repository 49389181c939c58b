"""The job runtime interface: a stack runs one job of a workflow run and returns a JobResult.

The runner (engine/runner.py) owns the run: ordering, retries, timeouts, records,
logs. A stack only does the job's work. It never raises for a user-facing failure:
it returns JobResult(ok=False, message=...) naming what went wrong. The runner
catches anything else as an internal error of that job.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol


class Lake(Protocol):
    """The platform's lake (a DuckDB file), shared by the jobs of a run inside one process. The runner's
    also has `schemas`, the set of schemas known to exist in this run (a write creates one only once), and
    `row_counts`, the row counts of the tables the run wrote (a reader of one needs no count)."""

    path: Path

    def cursor(self):
        """A DuckDB cursor for the calling thread (duckdb.DuckDBPyConnection.cursor() of the run's connection)."""


@dataclass
class JobContext:
    workflow: str  # workflow name
    workflow_id: str  # "workflow:WS/NAME"
    workspace: str
    job: str  # job name
    stack: str  # "sql", "quality", ..., a custom stack name, or "operator:NAME"
    spec: dict  # the job's `spec` as written (normalised)
    run_id: str
    attempt: int  # 1-based
    commit: str | None
    state_dir: Path
    repo_dir: Path  # the repository tree at `commit`, materialised
    job_dir: Path  # a fresh folder for this job attempt's files (exports, outputs); see Stack.scratch
    run_dir: Path  # the workspace's run folder (shell and custom stacks run here)
    lake: Lake
    depots: dict[str, dict]  # depot name -> its whole normalised document (spec["depot"] holds kind, path...)
    environ: dict[str, str]  # where secret values come from
    secret_env: dict[str, str] = field(default_factory=dict)  # the job's declared secrets, ENV_NAME -> value
    runtime_spec: dict | None = None  # the custom stack's or operator's whole normalised document
    runtime_secrets: dict[str, str] = field(default_factory=dict)  # e.g. an operator's auth token, by secret name
    log: Callable[[str], None] = print  # one line into the job's log; secret values are masked by the runner
    deadline: float | None = None  # time.monotonic() deadline from the job's timeout
    cancel: threading.Event = field(default_factory=threading.Event)  # set when the run is stopping

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())

    def timed_out(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline


@dataclass
class TableWritten:
    address: str  # lake://WS/TABLE
    columns: list[tuple[str, str]]  # (name, DuckDB type)
    row_count: int
    mode: str = "overwrite"


@dataclass
class CheckResult:
    name: str  # e.g. "not_null(id, amount)" or the check's own `name`
    check: str  # row_count | not_null | unique | accepted_values | relationships | freshness | expression
    dataset: str
    severity: str  # error | warn
    passed: bool
    failing_rows: int = 0
    sample: list[dict] = field(default_factory=list)  # up to 5 failing rows (JSON-safe values)
    message: str = ""
    columns: list[str] = field(default_factory=list)


@dataclass
class JobResult:
    ok: bool
    message: str = ""
    rows_in: int | None = None
    rows_out: int | None = None
    inputs: list[str] = field(default_factory=list)  # dataset addresses read
    outputs: list[TableWritten] = field(default_factory=list)  # lake tables written
    # output address -> output column -> [(input address, input column), ...]  (sql stack, from sqlglot)
    column_lineage: dict[str, dict[str, list[tuple[str, str]]]] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)  # quality stack
    profiles: dict[str, list[dict]] = field(default_factory=dict)  # profile stack: address -> per-column stats
    sql: str | None = None  # the SQL that ran (for OpenLineage's SQL facet)
    external_id: str | None = None  # operator: the external engine's run id
    retryable: bool = True  # False for errors a retry cannot fix (bad SQL, missing file, schema)
    lineage_s: float = 0.0  # seconds the job spent on column lineage on its own path (sql stack; the run's account)


class Stack(Protocol):
    name: str
    # whether the job needs ctx.job_dir made before it runs (process stacks run in it); a stack without the
    # attribute gets one. The in-process stacks set False: two mkdirs per job they never use.
    scratch: bool
    # whether the job's work is DuckDB queries on the run's lake in this process (each on every CPU): the
    # runner runs at most as many of those at once as there are CPUs. Without the attribute: False.
    lake_bound: bool

    def run(self, ctx: JobContext) -> JobResult: ...
