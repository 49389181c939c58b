"""The python stack's subprocess: `python -m reconciler.stacks.python_child JOB_JSON`.

It imports the user's file, calls the job's function with a `ctx` (PythonJobContext)
and writes what the function produced as Parquet files for the parent to load into
the lake. It never opens the lake: inputs arrive as Parquet files, read here with an
in-memory DuckDB or pyarrow. The outcome goes to the job's result file:
{"ok": bool, "message": str, "retryable": bool, "written": {output: rows}}.

Exit codes: 0 done, 1 the user's code failed (or misused ctx), 2 bad job file,
3 the file cannot be imported or has no such function.
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import traceback
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_USER_ERROR, EXIT_BAD_JOB, EXIT_LOAD_ERROR = 0, 1, 2, 3
_MESSAGE_LIMIT = 300


class JobApiError(Exception):
    """The job's code used ctx in a way that cannot work (unknown input/output, unwritable rows)."""


class PythonJobContext:
    """What the job's function receives as `ctx`; documented in docs/python-jobs.md."""

    def __init__(self, job: dict):
        self.params: dict = job.get("params") or {}
        self.run_id: str = job.get("run_id", "")
        self.job: str = job.get("job", "")
        self.workflow: str = job.get("workflow", "")
        self.workspace: str = job.get("workspace", "")
        self.attempt: int = job.get("attempt", 1)
        self.job_dir = Path(job.get("job_dir") or ".")  # scratch space for this attempt
        self._inputs: dict[str, str] = job.get("inputs") or {}
        self._outputs: dict[str, str] = job.get("outputs") or {}
        self._writers: dict[str, Any] = {}  # output name -> pyarrow.parquet.ParquetWriter
        self._rows: dict[str, int] = {}
        self._duckdb = None

    @property
    def inputs(self) -> list[str]:
        return list(self._inputs)

    @property
    def outputs(self) -> list[str]:
        return list(self._outputs)

    # ---- reading ------------------------------------------------------------------------------------

    def read(self, name: str) -> list[dict]:
        """Every row of input `name` as a dict (DECIMAL -> Decimal, TIMESTAMP -> datetime, ...)."""
        path = self._input_path(name, "read")
        if self._duckdb is None:
            import duckdb
            self._duckdb = duckdb.connect(":memory:")
        cursor = self._duckdb.execute("SELECT * FROM read_parquet(?)", [path])
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row)) for row in cursor.fetchall()]

    def read_arrow(self, name: str):
        """Input `name` as a pyarrow.Table."""
        import pyarrow.parquet as pq
        return pq.read_table(self._input_path(name, "read_arrow"))

    def read_df(self, name: str):
        """Input `name` as a pandas DataFrame (needs pandas in the job's Python)."""
        try:
            import pandas  # noqa: F401
        except ImportError:
            raise JobApiError("ctx.read_df needs pandas, which is not installed in the Python that runs jobs; "
                              "install it there, or use ctx.read(name) (a list of dicts) or ctx.read_arrow(name)"
                              ) from None
        return self.read_arrow(name).to_pandas()

    def _input_path(self, name: str, method: str) -> str:
        if name not in self._inputs:
            known = ", ".join(self._inputs) or "none"
            raise JobApiError(f"ctx.{method}({name!r}): this job has no input called {name!r} (inputs: {known})")
        return self._inputs[name]

    # ---- writing ------------------------------------------------------------------------------------

    def write(self, name: str, data: Any) -> int:
        """Rows for output `name`: a list of dicts or a pyarrow Table; several calls append. Returns rows added."""
        import pyarrow.parquet as pq
        if name not in self._outputs:
            known = ", ".join(self._outputs) or "none"
            raise JobApiError(f"ctx.write({name!r}, ...): this job has no output called {name!r} (outputs: {known}); "
                              "declare it under the job's spec.outputs")
        table = _to_table(name, data)
        if table is None:  # an empty list: nothing to add, and no columns to create a table from
            self._rows.setdefault(name, 0)
            return 0
        writer = self._writers.get(name)
        if writer is None:
            writer = self._writers[name] = pq.ParquetWriter(self._outputs[name], table.schema)
        elif table.schema != writer.schema:
            table = _conform(name, table, writer.schema)
        writer.write_table(table)
        self._rows[name] = self._rows.get(name, 0) + table.num_rows
        return table.num_rows

    def log(self, message: Any) -> None:
        print(message, flush=True)

    def _finish(self) -> dict[str, int]:
        for writer in self._writers.values():
            writer.close()
        empty = [name for name in self._rows if name not in self._writers]
        if empty:
            raise JobApiError(f"output {empty[0]!r} got only empty lists, which have no columns to make a table from; "
                              "write at least one row, or a pyarrow Table with a schema for an empty result")
        return dict(self._rows)


def _to_table(name: str, data: Any):
    import pyarrow as pa
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns"):
        return pa.Table.from_pandas(data, preserve_index=False)
    if isinstance(data, (dict, str, bytes)) or not hasattr(data, "__iter__"):
        raise JobApiError(f"ctx.write({name!r}, ...) got {type(data).__name__}; pass a list of dicts (one per row) "
                          "or a pyarrow Table")
    rows = list(data)
    if not rows:
        return None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise JobApiError(f"ctx.write({name!r}, rows): row {i} is {type(row).__name__}, not a dict")
    columns: dict[str, Any] = {}
    for key in dict.fromkeys(key for row in rows for key in row):  # every key, in first-seen order
        values = [row.get(key) for row in rows]
        try:
            columns[str(key)] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            kinds = ", ".join(sorted({type(v).__name__ for v in values if v is not None}))
            raise JobApiError(f"ctx.write({name!r}, rows): column {key!r} mixes values of types {kinds}; "
                              "give every row the same type there") from None
    return pa.table(columns)


def _conform(name: str, table, schema):
    if set(table.schema.names) != set(schema.names):
        raise JobApiError(f"ctx.write({name!r}, ...): the columns ({', '.join(table.schema.names)}) differ from an "
                          f"earlier write to {name!r} ({', '.join(schema.names)})")
    try:
        return table.select(schema.names).cast(schema)
    except Exception as exc:  # pyarrow raises several types for a failed cast
        raise JobApiError(f"ctx.write({name!r}, ...): column types differ from an earlier write: {exc}") from None


# ---- running the job's function -------------------------------------------------------------------------

def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else ""
    return line[:_MESSAGE_LIMIT] + ("..." if len(line) > _MESSAGE_LIMIT else "")


def _print_user_traceback(exc: BaseException) -> None:
    """The traceback of the user's code: this module's and importlib's frames left out."""
    shown = traceback.TracebackException(type(exc), exc, exc.__traceback__)
    shown.stack = traceback.StackSummary.from_list(
        [f for f in shown.stack if f.filename != __file__ and not f.filename.startswith("<frozen importlib")])
    print("".join(shown.format()), end="", file=sys.stderr, flush=True)


def _finish(result_path: Path, code: int, message: str = "", retryable: bool = True,
            written: dict | None = None) -> int:
    sys.stdout.flush()
    result = {"ok": code == EXIT_OK, "message": message, "retryable": retryable, "written": written or {}}
    result_path.write_text(json.dumps(result))
    if message and code != EXIT_OK:
        print(message, file=sys.stderr, flush=True)
    return code


def _load_module(path: Path):
    stem = path.stem
    # a file called json.py must not replace the json module this process already uses
    name = stem if stem.isidentifier() and stem not in sys.modules else f"reconciler_job_{abs(hash(path))}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    spec.loader.exec_module(module)
    return module


def run_job(job: dict) -> int:
    result_path = Path(job["result"])
    path, shown, function = Path(job["file"]), job.get("display") or job["file"], job["function"]
    who = f"{path.stem}.{function}"
    sys.path.insert(0, str(path.parent))  # like `python scripts/x.py`: the file's siblings import by name
    try:
        module = _load_module(path)
    except SyntaxError as exc:
        print("".join(traceback.format_exception_only(type(exc), exc)), end="", file=sys.stderr)
        return _finish(result_path, EXIT_LOAD_ERROR, f"{shown} line {exc.lineno}: SyntaxError: {exc.msg}", False)
    except Exception as exc:
        _print_user_traceback(exc)
        return _finish(result_path, EXIT_LOAD_ERROR,
                       f"cannot import {shown}: {type(exc).__name__}: {_first_line(exc)}", False)
    target = getattr(module, function, None)
    if not callable(target):
        defined = [n for n, v in vars(module).items()
                   if inspect.isfunction(v) and v.__module__ == module.__name__ and not n.startswith("_")]
        hint = f"; it defines {', '.join(defined)}" if defined else ""
        return _finish(result_path, EXIT_LOAD_ERROR, f"function '{function}' not found in {shown}{hint}", False)

    ctx = PythonJobContext(job)
    try:
        try:
            returned = target(ctx) if _accepts_argument(target) else target()
        except SystemExit as exc:
            if exc.code not in (None, 0):
                return _finish(result_path, EXIT_USER_ERROR, f"{who} called sys.exit({exc.code!r})")
            returned = None
        if returned is not None and not isinstance(returned, dict):
            return _finish(result_path, EXIT_USER_ERROR, f"{who} returned {type(returned).__name__}; return None "
                           "(after ctx.write) or a dict {output_name: rows}", False)
        for name, data in (returned or {}).items():
            ctx.write(name, data)
        written = ctx._finish()
    except Exception as exc:
        _print_user_traceback(exc)
        detail = _first_line(exc)
        message = f"{who} raised {type(exc).__name__}" + (f": {detail}" if detail else "")
        # a misuse of ctx fails the same way on every attempt; the user's own errors may be transient
        return _finish(result_path, EXIT_USER_ERROR, message, retryable=not isinstance(exc, JobApiError))
    return _finish(result_path, EXIT_OK, written=written)


def _accepts_argument(function) -> bool:
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL) for p in params)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m reconciler.stacks.python_child JOB_JSON", file=sys.stderr)
        return EXIT_BAD_JOB
    try:
        job = json.loads(Path(argv[0]).read_text())
        job["file"], job["function"], job["result"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"cannot read job file {argv[0]}: {exc}", file=sys.stderr)
        return EXIT_BAD_JOB
    return run_job(job)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
