"""The `python` stack: a function in a file of the repository, run in a subprocess.

The lake is a DuckDB file that only this process may open, so data crosses the
process boundary as Parquet: each input is exported to ctx.job_dir/inputs/NAME.parquet,
the child (python_child.py) calls the function and writes each output to
ctx.job_dir/outputs/NAME.parquet, and this side loads those into the lake with
the output's mode. The child gets a small environment: PATH, HOME, LANG,
RECONCILER_*, PYTHONPATH (the repository root first) and the job's secrets.
"""
from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from pathlib import Path

import duckdb

import reconciler

from . import datasets
from .base import JobContext, JobResult, TableWritten
from .process import base_env, failure_of, run_process


def _package_path() -> list[str]:
    """What the child's PYTHONPATH needs so that `-m reconciler.stacks.python_child` imports.

    An installed reconciler (editable or not) is found without help; running from a source tree is
    not, and then its folder goes last, after the repository root, so the user's own top-level
    packages (a `tests/` folder, say) win over ours."""
    try:
        importlib.metadata.distribution("reconciler")
        return []
    except importlib.metadata.PackageNotFoundError:
        return [str(Path(reconciler.__file__).resolve().parent.parent)]


class PythonStack:
    name = "python"

    def run(self, ctx: JobContext) -> JobResult:
        spec = ctx.spec
        shown = spec["file"]
        repo = Path(ctx.repo_dir).resolve()
        source = (repo / shown).resolve()
        if not source.is_file() or not source.is_relative_to(repo):
            return JobResult(ok=False, message=f"python file {shown} does not exist in the repository",
                             retryable=False)
        job_dir = Path(ctx.job_dir).absolute()  # the child runs in another working directory
        inputs_dir, outputs_dir = job_dir / "inputs", job_dir / "outputs"
        for folder in (inputs_dir, outputs_dir):
            folder.mkdir(parents=True, exist_ok=True)
        outputs = {o["name"]: outputs_dir / f"{o['name']}.parquet" for o in spec.get("outputs") or []}
        for stale in outputs.values():  # a file left by an earlier attempt must not pass for this one's
            stale.unlink(missing_ok=True)

        try:
            inputs, rows_in = self._export_inputs(ctx, spec.get("inputs") or [], inputs_dir)
        except datasets.DatasetError as exc:
            return JobResult(ok=False, message=exc.message, retryable=exc.retryable)
        addresses = [i["dataset"] for i in spec.get("inputs") or []]

        result_file = job_dir / "result.json"
        result_file.unlink(missing_ok=True)
        job_file = job_dir / "job.json"
        job_file.write_text(json.dumps({
            "file": str(source), "display": shown, "function": spec["function"], "params": spec.get("params") or {},
            "inputs": inputs, "outputs": {name: str(path) for name, path in outputs.items()},
            "result": str(result_file), "run_id": ctx.run_id, "job": ctx.job, "workflow": ctx.workflow,
            "workspace": ctx.workspace, "attempt": ctx.attempt, "job_dir": str(job_dir),
        }, default=str))  # YAML may give dates in params; they arrive as ISO text

        env = {**base_env(ctx),
               "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(repo), *_package_path()])),
               "PYTHONUNBUFFERED": "1",  # log lines as they are printed, not at exit
               "PYTHONDONTWRITEBYTECODE": "1",  # keep __pycache__ out of the materialised repository
               "PYTHONIOENCODING": "utf-8",
               **ctx.secret_env}
        outcome = run_process([sys.executable, "-m", "reconciler.stacks.python_child", str(job_file)],
                              cwd=job_dir, env=env, log=ctx.log, deadline=ctx.deadline, cancel=ctx.cancel)
        failed = failure_of(outcome, what=f"python job {shown}")
        if failed is not None:
            reported = _read_result(result_file)
            if reported.get("message") and not (outcome.timed_out or outcome.cancelled):
                failed.message = reported["message"]
                failed.retryable = bool(reported.get("retryable", True))
            failed.inputs, failed.rows_in = addresses, rows_in
            return failed

        missing = [name for name, path in outputs.items() if not path.is_file()]
        if missing:
            name = missing[0]
            return JobResult(ok=False, inputs=addresses, rows_in=rows_in, retryable=False,
                             message=f"output '{name}' was not written: call ctx.write('{name}', rows) in "
                                     f"{spec['function']}() or return {{'{name}': rows}}")
        try:
            written = self._load_outputs(ctx, spec.get("outputs") or [], outputs)
        except datasets.DatasetError as exc:
            return JobResult(ok=False, message=exc.message, retryable=exc.retryable, inputs=addresses,
                             rows_in=rows_in)
        rows_out = sum(datasets.written_rows(t) for t in written)
        summary = ", ".join(f"{datasets.written_rows(t)} rows to {t.address}" for t in written) or "no outputs"
        return JobResult(ok=True, message=f"{Path(shown).stem}.{spec['function']} wrote {summary}",
                         rows_in=rows_in, rows_out=rows_out if written else None, inputs=addresses, outputs=written)

    @staticmethod
    def _export_inputs(ctx: JobContext, inputs: list[dict], folder: Path) -> tuple[dict[str, str], int | None]:
        """Each input as NAME.parquet; (name -> file, total rows). Raises DatasetError."""
        files: dict[str, str] = {}
        total = 0
        cur = ctx.lake.cursor()
        try:
            for item in inputs:
                name, address = item["name"], item["dataset"]
                datasets.register_input(cur, ctx, name, address)
                path = folder / f"{name}.parquet"
                try:
                    copied = cur.execute(f"COPY (SELECT * FROM {datasets.ident(name)}) "
                                         f"TO {datasets.literal(str(path))} (FORMAT parquet)").fetchone()
                except duckdb.InterruptException:
                    raise
                except duckdb.Error as exc:
                    raise datasets.DatasetError(f"cannot read {address}: {datasets.first_line(exc)}") from None
                total += int(copied[0]) if copied and isinstance(copied[0], int) else 0
                files[name] = str(path)
        finally:
            datasets.release_inputs(cur)
            cur.close()
        return files, total if inputs else None

    @staticmethod
    def _load_outputs(ctx: JobContext, declared: list[dict], files: dict[str, Path]) -> list[TableWritten]:
        written = []
        cur = ctx.lake.cursor()
        try:
            for output in declared:
                select = f"SELECT * FROM read_parquet({datasets.literal(str(files[output['name']]))})"
                written.append(datasets.write_output(cur, ctx, output["dataset"], select,
                                                     output.get("mode") or "overwrite", output.get("keys") or None))
                ctx.log(f"wrote {datasets.written_rows(written[-1])} rows to {output['dataset']} "
                        f"({output.get('mode') or 'overwrite'})")
        finally:
            cur.close()
        return written


def _read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return result if isinstance(result, dict) else {}
