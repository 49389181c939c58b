"""The `profile` stack: per-column statistics of one dataset, for the catalog.

Per column: count (rows, as DuckDB's SUMMARIZE counts them), nulls, distinct (non-null values),
min, max, mean (numeric columns only) and the 5 most frequent non-null values with their counts.
Nested columns (lists, structs, maps) get counts only.
"""
from __future__ import annotations


from reconciler.stacks.base import JobContext, JobResult
from reconciler.stacks.datasets import DatasetError, describe_relation, ident, json_safe, register_input
from reconciler.stacks.quality import is_numeric
from reconciler.stacks.sql import Watchdog, guarded

DATA = "_profile_dataset"
TOP = 5


def _nested(type_: str) -> bool:
    upper = type_.upper()
    return upper.endswith("]") or upper.startswith(("STRUCT", "MAP", "UNION"))


class ProfileStack:
    name = "profile"
    lake_bound = True  # DuckDB queries in this process, each on every CPU (engine/runner.py to_start)
    scratch = False  # runs in this process on the lake: no job folder

    def run(self, ctx: JobContext) -> JobResult:
        spec = ctx.spec or {}
        address = spec.get("dataset", "")
        result = JobResult(ok=True, inputs=[address])
        return guarded(ctx, result, lambda cur, dog: self._run(ctx, cur, dog, address, spec.get("columns"), result))

    def _run(self, ctx: JobContext, cur, dog: Watchdog, address: str, wanted: list[str] | None,
             result: JobResult) -> JobResult:
        try:
            register_input(cur, ctx, DATA, address)
        except DatasetError as exc:
            result.ok, result.message, result.retryable = False, exc.message, exc.retryable
            return result
        columns = describe_relation(cur, ident(DATA))
        if wanted:
            by_lower = {name.lower(): (name, type_) for name, type_ in columns}
            missing = [c for c in wanted if c.lower() not in by_lower]
            if missing:
                result.ok, result.retryable = False, False
                result.message = (f"column '{missing[0]}' does not exist in {address} "
                                  f"(columns: {', '.join(name for name, _ in columns)})")
                return result
            columns = [by_lower[c.lower()] for c in wanted]
        dog.check()
        rows, stats = self._stats(cur, columns)
        result.rows_in = rows
        profiles = []
        for (name, type_), (nulls, distinct, low, high, mean) in zip(columns, stats):
            dog.check()
            profiles.append({"column": name, "type": type_, "count": rows, "nulls": nulls, "distinct": distinct,
                             "min": json_safe(low), "max": json_safe(high), "mean": json_safe(mean),
                             "top": [] if _nested(type_) else self._top(cur, name)})
        result.profiles[address] = profiles
        result.message = f"{len(profiles)} column(s) profiled over {rows} rows"
        ctx.log(result.message)
        return result

    @staticmethod
    def _stats(cur, columns: list[tuple[str, str]]) -> tuple[int, list[tuple]]:
        """Row count and (nulls, distinct, min, max, mean) per column, in one scan."""
        parts = ["count(*)"]
        for name, type_ in columns:
            col = ident(name)
            parts.append(f"count(*) - count({col})")
            parts.append(f"count(DISTINCT {col})")
            if _nested(type_):
                parts += ["NULL", "NULL"]
            else:
                parts += [f"min({col})", f"max({col})"]
            parts.append(f"avg({col})" if is_numeric(type_) else "NULL")
        row = cur.execute(f"SELECT {', '.join(parts)} FROM {ident(DATA)}").fetchall()[0]
        return row[0], [tuple(row[1 + 5 * i: 6 + 5 * i]) for i in range(len(columns))]

    @staticmethod
    def _top(cur, name: str) -> list[list]:
        col = ident(name)
        rows = cur.execute(f"SELECT v, n FROM (SELECT {col} AS v, count(*) AS n FROM {ident(DATA)} "
                           f"WHERE {col} IS NOT NULL GROUP BY ALL) ORDER BY n DESC, v NULLS LAST LIMIT {TOP}"
                           ).fetchall()
        return [[json_safe(value), count] for value, count in rows]
