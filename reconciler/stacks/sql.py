"""The `sql` stack: DuckDB SQL steps over named inputs, written into lake tables.

Each input becomes a relation named after it, each step a TEMP VIEW named after it (steps
read inputs and earlier steps by name; DuckDB plans the chain as one query per output),
and each output is written from a step or an input in its own transaction. Everything
runs on one fresh cursor of the run's lake connection, which a watchdog interrupts at the
job's deadline or when the run is cancelled.
"""
from __future__ import annotations

import re
import threading
import time

import duckdb

from reconciler.core.resources import format_duration
from reconciler.stacks.base import JobContext, JobResult
from reconciler.stacks.datasets import (DatasetError, ident, parse_address, register_input, release_inputs,
                                        run_memo, view_columns, write_output, written_rows)
from reconciler.stacks.lineage import column_lineage, plain_column_lineage

_POLL = 0.05  # seconds between the watchdog's looks at the deadline and the cancel flag


class Stopped(Exception):
    """The job passed its deadline or the run was cancelled (raised between statements)."""


class _Monitor:
    """The one thread behind every Watchdog of the process: every _POLL seconds it looks at each
    running job's deadline and cancel flag. (A thread per job cost two thread handshakes per job, each
    waiting for the GIL while other jobs run Python.) It ends when no job is watched."""

    def __init__(self):
        self._lock = threading.Lock()
        self._dogs: dict[int, "Watchdog"] = {}
        self._thread: threading.Thread | None = None

    def add(self, dog: "Watchdog") -> None:
        with self._lock:
            self._dogs[id(dog)] = dog
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="watchdog", daemon=True)
                self._thread.start()

    def remove(self, dog: "Watchdog") -> None:
        with self._lock:
            self._dogs.pop(id(dog), None)

    def _loop(self) -> None:
        while True:
            time.sleep(_POLL)
            with self._lock:
                dogs = list(self._dogs.values())
                if not dogs:
                    self._thread = None
                    return
            for dog in dogs:
                try:
                    dog._look()
                except Exception:  # noqa: BLE001 - a cursor closed meanwhile: the next look is the job's own
                    pass


_MONITOR = _Monitor()


class Watchdog:
    """Interrupts the query running on `cur` once ctx.deadline passes or ctx.cancel is set, and keeps
    interrupting until stop(): an interrupt that lands between two statements is lost, so the
    stack also calls check() before each statement."""

    def __init__(self, ctx: JobContext, cur):
        self.ctx = ctx
        self.cur = cur
        self.started = time.monotonic()
        self.reason: str | None = None  # "timeout" | "cancelled"
        self._done = False
        self._lock = threading.Lock()

    def __enter__(self) -> "Watchdog":
        _MONITOR.add(self)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _due(self) -> str | None:
        if self.ctx.cancel.is_set():
            return "cancelled"
        if self.ctx.timed_out():
            return "timeout"
        return None

    def _look(self) -> None:
        """The monitor's look, every _POLL seconds while the job runs."""
        self.reason = self.reason or self._due()
        if self.reason:
            with self._lock:
                if not self._done:
                    self.cur.interrupt()

    def stop(self) -> None:
        """No interrupt reaches the cursor once this returns, and the watchdog lets go of it: the monitor is a
        daemon thread, and a DuckDB connection whose last reference goes away on such a thread while the
        interpreter exits aborts the process (its destructor releases and retakes the GIL; duckdb#13904)."""
        with self._lock:
            self._done = True
            self.cur = None
        _MONITOR.remove(self)

    def check(self) -> None:
        self.reason = self.reason or self._due()
        if self.reason:
            raise Stopped(self.reason)

    def message(self) -> str:
        if self.reason == "timeout" and self.ctx.deadline is not None:
            budget = max(0.0, self.ctx.deadline - self.started)
            return f"timed out after {format_duration(round(budget) if budget >= 1 else round(budget, 3))}"
        return "cancelled" if self.reason == "cancelled" else "interrupted"


def stopped_result(dog: Watchdog, result: JobResult) -> JobResult:
    result.ok = False
    result.message = dog.message()
    result.retryable = dog.reason != "cancelled"
    return result


def guarded(ctx: JobContext, result: JobResult, body) -> JobResult:
    """Run body(cur, dog) on a fresh lake cursor under the job's watchdog: a timeout or cancel becomes
    the stopped result, a DuckDB error the failed one; inputs are released and the cursor closed."""
    cur = ctx.lake.cursor()
    dog = Watchdog(ctx, cur)
    try:
        with dog:
            return body(cur, dog)
    except (Stopped, duckdb.InterruptException):
        return stopped_result(dog, result)
    except duckdb.Error as exc:
        return failed_result(result, exc)
    finally:
        release_inputs(cur, closing=True)
        cur.close()


def failed_result(result: JobResult, exc: Exception) -> JobResult:
    """A DuckDB error no finer handler expected (e.g. reading a dataset that changed underneath)."""
    result.ok, result.message = False, str(exc).strip()
    # a lock or write conflict with another job may clear; anything else would fail again
    result.retryable = isinstance(exc, (duckdb.TransactionException, duckdb.IOException))
    return result


def clean_sql(sql: str) -> str:
    return sql.strip().rstrip(";").rstrip()


def user_positions(message: str, shift: int = 1) -> str:
    """DuckDB's `LINE n:` markers of a statement we wrapped in `shift` extra leading lines, renumbered
    to the user's own SQL (the caret line under it is realigned)."""
    lines = message.split("\n")
    for i, line in enumerate(lines):
        match = re.match(r"^LINE (\d+): ", line)
        if not match or int(match.group(1)) <= shift:
            continue
        prefix = f"LINE {int(match.group(1)) - shift}: "
        lines[i] = prefix + line[match.end():]
        cut = match.end() - len(prefix)
        if cut and i + 1 < len(lines) and lines[i + 1].startswith(" " * cut) and "^" in lines[i + 1]:
            lines[i + 1] = lines[i + 1][cut:]
    return "\n".join(lines).strip()


def _step_error(cur, name: str, sql: str) -> str | None:
    """Why a step's SQL is not one query, from DuckDB's parser (its positions are the user's own)."""
    try:
        statements = cur.extract_statements(sql)
    except duckdb.Error as exc:
        return str(exc).strip()
    if len(statements) != 1:
        return f"a step is one SELECT query; this one has {len(statements)} statements"
    if statements[0].type != duckdb.StatementType.SELECT:
        kind = str(statements[0].type).rsplit(".", 1)[-1]
        return f"a step is one SELECT query (it becomes a view); this one is a {kind} statement"
    return None


_LINEAGE_POOL = None


def _in_background(fn, *args):
    """fn(*args) on a small shared thread pool; .result() gives its value."""
    global _LINEAGE_POOL
    if _LINEAGE_POOL is None:
        from concurrent.futures import ThreadPoolExecutor

        _LINEAGE_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lineage")
    return _LINEAGE_POOL.submit(fn, *args)


class SqlStack:
    name = "sql"
    lake_bound = True  # DuckDB queries in this process, each on every CPU (engine/runner.py to_start)
    scratch = False  # runs in this process on the lake: no job folder

    def run(self, ctx: JobContext) -> JobResult:
        spec = ctx.spec or {}
        inputs = [(i["name"], i["dataset"]) for i in spec.get("inputs") or []]
        steps = [(s["name"], clean_sql(s["sql"])) for s in spec.get("steps") or []]
        result = JobResult(ok=True, inputs=[address for _, address in inputs],
                           sql="\n".join(f"-- step: {name}\n{sql};" for name, sql in steps) or None)
        cur = ctx.lake.cursor()
        dog = Watchdog(ctx, cur)
        try:
            with dog:
                return self._run(ctx, cur, dog, inputs, steps, spec.get("outputs") or [], result)
        except Stopped:
            return stopped_result(dog, result)
        except duckdb.InterruptException:
            return stopped_result(dog, result)
        except duckdb.Error as exc:
            return failed_result(result, exc)
        finally:
            # the steps' and inputs' TEMP views go with the cursor (a connection of its own)
            release_inputs(cur, closing=True)
            cur.close()

    def _run(self, ctx: JobContext, cur, dog: Watchdog, inputs: list[tuple[str, str]],
             steps: list[tuple[str, str]], outputs: list[dict], result: JobResult) -> JobResult:
        def fail(message: str, retryable: bool = False) -> JobResult:
            result.ok, result.message, result.retryable = False, message, retryable
            return result

        counts = []
        for name, address in inputs:
            dog.check()
            try:
                count = register_input(cur, ctx, name, address)
            except DatasetError as exc:
                return fail(f"input '{name}': {exc.message}", exc.retryable)
            counts.append(count)
            ctx.log(f"input {name}: {address}" + (f" ({count} rows)" if count is not None else ""))
        # rows in is only worth showing when every input was counted
        result.rows_in = sum(counts) if counts and None not in counts else None

        for name, sql in steps:
            dog.check()
            problem = _step_error(cur, name, sql)
            if problem:
                return fail(f"step '{name}': {problem}")
            try:
                # the SQL starts on a line of its own so DuckDB's LINE numbers map back to it
                cur.execute(f"CREATE OR REPLACE TEMP VIEW {ident(name)} AS\n{sql}")
            except duckdb.InterruptException:
                raise
            except duckdb.Error as exc:
                return fail(f"step '{name}': {user_positions(str(exc))}")
            ctx.log(f"step {name}: ok")

        schemas = {}
        known = run_memo(ctx, "columns")  # a table an upstream job wrote, a depot dataset another job described
        for name, address in inputs:
            columns = known.get(address)
            if columns is None:
                try:
                    columns = view_columns(cur, name)
                except duckdb.InterruptException:
                    raise
                except duckdb.Error:
                    continue  # lineage only: it then traces what it can without this input's columns
                if parse_address(address)[0] == "depot":  # a lake table's columns come from its writes only
                    known[address] = columns
            schemas[name] = dict(columns)

        rows_out = 0
        for output in outputs:
            dog.check()
            source, address = output["from"], output["dataset"]
            mode = output.get("mode") or "overwrite"
            started = time.monotonic()
            columns = view_columns(cur, source)
            names = [c for c, _ in columns]
            # column lineage: a plain step's in line (~0.1 ms); else sqlglot's (pure Python, a few ms) on another
            # thread while DuckDB runs the write (it releases the GIL then): it does not add its ms to the job
            tracing = time.perf_counter()
            traced = plain_column_lineage(steps, dict(inputs), source, names, schemas)
            result.lineage_s += time.perf_counter() - tracing
            lineage = []

            def trace(source=source, names=names, lineage=lineage):
                if traced is None:
                    lineage.append(_in_background(column_lineage, steps, dict(inputs), source, names, schemas))
            try:
                written = write_output(cur, ctx, address, f"SELECT * FROM {ident(source)}", mode,
                                       output.get("keys") or [], columns=columns, alongside=trace)
            except DatasetError as exc:
                for pending in lineage:
                    pending.result()
                return fail(exc.message, exc.retryable)
            rows = written_rows(written)
            rows_out += rows
            result.outputs.append(written)
            ctx.log(f"output {address}: {rows} rows written ({mode}), {written.row_count} in the table, "
                    f"{time.monotonic() - started:.2f}s")
            tracing = time.perf_counter()  # what is left of a background trace once the write is done
            result.column_lineage[address] = (traced if traced is not None else lineage[0].result() if lineage
                                              else column_lineage(steps, dict(inputs), source, names, schemas))
            result.lineage_s += time.perf_counter() - tracing
        result.rows_out = rows_out
        result.message = (f"{len(result.outputs)} output(s), {rows_out} rows written" if outputs
                          else f"{len(steps)} step(s) ran; no outputs")
        return result
