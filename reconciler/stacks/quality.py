"""The `quality` stack: assertions on one dataset. A failed check of severity `error` fails the
job; a failed `warn` check only shows. A check that names a column the dataset does not have is
a mistake in the workflow, not in the data, so it fails the job whatever its severity.
"""
from __future__ import annotations

import datetime as dt

import duckdb

from reconciler.core.resources import format_duration, parse_duration
from reconciler.stacks.base import CheckResult, JobContext, JobResult
from reconciler.stacks.datasets import DatasetError, describe_relation, ident, json_safe, literal, register_input
from reconciler.stacks.sql import Watchdog, guarded

DATA = "_quality_dataset"
SAMPLE = 5
_NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT",
            "UHUGEINT", "FLOAT", "DOUBLE", "DECIMAL", "REAL")


class ConfigError(Exception):
    """The check itself is wrong (a missing column, an expression that does not bind)."""


def is_numeric(type_: str) -> bool:
    return type_.upper().split("(")[0] in _NUMERIC


def _humanize(seconds: float) -> str:
    seconds = int(seconds)
    parts = [(seconds // 86400, "d"), (seconds % 86400 // 3600, "h"), (seconds % 3600 // 60, "m"), (seconds % 60, "s")]
    shown = [f"{n}{unit}" for n, unit in parts if n][:2]
    return " ".join(shown) or "0s"


class _Checker:
    """Runs one dataset's checks on a cursor where the dataset is registered as DATA."""

    def __init__(self, cur, ctx: JobContext, address: str, columns: list[tuple[str, str]], rows: int):
        self.cur, self.ctx, self.address, self.rows = cur, ctx, address, rows
        self.columns = columns
        self.types = {name.lower(): (name, type_) for name, type_ in columns}
        self.others = 0  # `to` datasets registered for relationships

    def column(self, name: str, address: str | None = None, types: dict | None = None) -> tuple[str, str]:
        """The dataset's own spelling and type of column `name`; ConfigError naming the columns if absent."""
        types = self.types if types is None else types
        found = types.get(str(name).lower())
        if found is None:
            listed = ", ".join(spelled for spelled, _ in types.values())
            raise ConfigError(f"column '{name}' does not exist in {address or self.address} (columns: {listed})")
        return found

    def count(self, where: str) -> int:
        return self.cur.execute(f"SELECT count(*) FROM {ident(DATA)} WHERE {where}").fetchall()[0][0]

    def sample(self, where: str) -> list[dict]:
        relation = self.cur.execute(f"SELECT * FROM {ident(DATA)} WHERE {where} LIMIT {SAMPLE}")
        names = [d[0] for d in relation.description]
        return [{n: json_safe(v) for n, v in zip(names, row)} for row in relation.fetchall()]

    def top_values(self, expression: str, where: str) -> str:
        rows = self.cur.execute(f"SELECT v, n FROM (SELECT {expression} AS v, count(*) AS n FROM {ident(DATA)} "
                                f"WHERE {where} GROUP BY ALL) ORDER BY n DESC, v NULLS LAST LIMIT {SAMPLE}"
                                ).fetchall()
        return ", ".join(f"{json_safe(v)} ({n})" for v, n in rows)

    # ---- one method per check kind: (passed, failing rows, sample, message, columns) ----

    def row_count(self, spec: dict):
        low, high = spec.get("min"), spec.get("max")
        passed = (low is None or self.rows >= low) and (high is None or self.rows <= high)
        bounds = ", ".join(f"{k} {v}" for k, v in (("min", low), ("max", high)) if v is not None)
        return passed, 0, [], f"{self.rows} rows ({bounds})", []

    def not_null(self, spec: list):
        names = [self.column(c)[0] for c in spec]
        nulls = self.cur.execute("SELECT " + ", ".join(f"count(*) FILTER (WHERE {ident(c)} IS NULL)" for c in names)
                                 + f" FROM {ident(DATA)}").fetchall()[0]
        where = " OR ".join(f"{ident(c)} IS NULL" for c in names)
        failing = self.count(where) if any(nulls) else 0
        if not failing:
            return True, 0, [], "no nulls", names
        shown = ", ".join(f"{c} ({n})" for c, n in zip(names, nulls) if n)
        return False, failing, self.sample(where), f"{failing} rows with nulls in {shown}", names

    def unique(self, spec: list):
        names = [self.column(c)[0] for c in spec]
        keys = ", ".join(ident(c) for c in names)
        # rows with a NULL key are left to not_null, as SQL's UNIQUE does
        present = " AND ".join(f"{ident(c)} IS NOT NULL" for c in names)
        grouped = (f"SELECT {keys}, count(*) AS duplicates FROM {ident(DATA)} WHERE {present} "
                   f"GROUP BY ALL HAVING count(*) > 1")
        values, failing = self.cur.execute(f"SELECT count(*), coalesce(sum(duplicates), 0) FROM ({grouped})").fetchall()[0]
        if not values:
            return True, 0, [], f"({', '.join(names)}) is unique", names
        relation = self.cur.execute(f"{grouped} ORDER BY duplicates DESC LIMIT {SAMPLE}")
        columns = [d[0] for d in relation.description]
        sample = [{n: json_safe(v) for n, v in zip(columns, row)} for row in relation.fetchall()]
        return (False, int(failing), sample,
                f"{values} value(s) of ({', '.join(names)}) appear more than once, in {int(failing)} rows", names)

    def accepted_values(self, spec: dict):
        name, type_ = self.column(spec["column"])
        values = spec["values"]
        if is_numeric(type_) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            subject, listed = ident(name), ", ".join(repr(v) for v in values)
        else:
            # compare as text: YAML's `true`, 7 or EUR against whatever type the column has
            subject = f"CAST({ident(name)} AS VARCHAR)"
            listed = ", ".join(literal(str(v).lower() if isinstance(v, bool) else str(v)) for v in values)
        where = f"{ident(name)} IS NOT NULL AND {subject} NOT IN ({listed})"
        failing = self.count(where)
        if not failing:
            return True, 0, [], f"every {name} is one of {len(values)} accepted values", [name]
        return (False, failing, self.sample(where),
                f"{failing} rows with {name} outside the accepted values: {self.top_values(ident(name), where)}", [name])

    def relationships(self, spec: dict):
        name, type_ = self.column(spec["column"])
        target = spec["to"]
        other = f"_quality_to_{self.others}"
        self.others += 1
        try:
            register_input(self.cur, self.ctx, other, target)
        except DatasetError as exc:
            raise ConfigError(f"relationships: {exc.message}") from None
        theirs = {c.lower(): (c, t) for c, t in describe_relation(self.cur, ident(other))}
        field, field_type = self.column(spec["field"], target, theirs)
        mine, their = f"{ident(DATA)}.{ident(name)}", f"o.{ident(field)}"
        if type_ != field_type:  # e.g. INTEGER ids against VARCHAR ones: compare their text
            mine, their = f"CAST({mine} AS VARCHAR)", f"CAST({their} AS VARCHAR)"
        where = (f"{ident(DATA)}.{ident(name)} IS NOT NULL AND NOT EXISTS "
                 f"(SELECT 1 FROM {ident(other)} AS o WHERE {their} = {mine})")
        failing = self.count(where)
        if not failing:
            return True, 0, [], f"every {name} is found in {target}.{field}", [name]
        return (False, failing, self.sample(where),
                f"{failing} rows whose {name} is not in {target}.{field}: {self.top_values(ident(name), where)}",
                [name])

    def freshness(self, spec: dict):
        name, type_ = self.column(spec["column"])
        upper = type_.upper()
        if not (upper.startswith("TIMESTAMP") or upper == "DATE"):
            raise ConfigError(f"freshness: column '{name}' of {self.address} is {type_}, not a date or timestamp; "
                              "cast it in the job that writes the dataset")
        max_age = parse_duration(spec["max_age"])
        newest = self.cur.execute(f"SELECT max({ident(name)}) FROM {ident(DATA)}").fetchall()[0][0]
        if newest is None:
            return False, 0, [], f"no {name} values at all (max_age {format_duration(max_age)})", [name]
        if isinstance(newest, dt.datetime):
            moment = newest if newest.tzinfo else newest.replace(tzinfo=dt.timezone.utc)  # naive: taken as UTC
        else:  # a date stands for the whole day: it is fresh until the day is over
            moment = dt.datetime.combine(newest + dt.timedelta(days=1), dt.time.min, tzinfo=dt.timezone.utc)
        age = (dt.datetime.now(dt.timezone.utc) - moment).total_seconds()
        shown = f"newest {name} is {json_safe(newest)}, {_humanize(max(age, 0))} old (max_age {format_duration(max_age)})"
        return age <= max_age, 0, [], shown, [name]

    def expression(self, spec: dict):
        condition = spec["sql"].strip().rstrip(";")
        # NULL passes, as in a SQL CHECK constraint; write `x IS NOT NULL AND ...` to require a value
        where = f"NOT ({condition})"
        try:
            failing = self.count(where)
        except duckdb.InterruptException:
            raise
        except duckdb.Error as exc:
            raise ConfigError(f"expression {condition!r} does not run on {self.address}: "
                              f"{str(exc).strip().splitlines()[0]}") from None
        if not failing:
            return True, 0, [], "every row satisfies it", []
        return False, failing, self.sample(where), f"{failing} rows where {condition} is false", []


def _default_name(kind: str, spec) -> str:
    if kind == "row_count":
        return "row_count(" + ", ".join(f"{k}={spec[k]}" for k in ("min", "max") if spec.get(k) is not None) + ")"
    if kind in ("not_null", "unique"):
        return f"{kind}({', '.join(map(str, spec))})"
    if kind == "accepted_values":
        return f"accepted_values({spec['column']})"
    if kind == "relationships":
        return f"relationships({spec['column']} -> {spec['to']}.{spec['field']})"
    if kind == "freshness":
        return f"freshness({spec['column']}, {spec['max_age']})"
    text = " ".join(str(spec.get("sql", "")).split())
    return f"expression({text if len(text) <= 60 else text[:57] + '...'})"


KINDS = ("row_count", "not_null", "unique", "accepted_values", "relationships", "freshness", "expression")


class QualityStack:
    name = "quality"
    lake_bound = True  # DuckDB queries in this process, each on every CPU (engine/runner.py to_start)
    scratch = False  # runs in this process on the lake: no job folder

    def run(self, ctx: JobContext) -> JobResult:
        spec = ctx.spec or {}
        address = spec.get("dataset", "")
        result = JobResult(ok=True, inputs=[address], retryable=False)
        return guarded(ctx, result, lambda cur, dog: self._run(ctx, cur, dog, address, spec.get("checks") or [], result))

    def _run(self, ctx: JobContext, cur, dog: Watchdog, address: str, checks: list[dict],
             result: JobResult) -> JobResult:
        try:
            rows = register_input(cur, ctx, DATA, address)
        except DatasetError as exc:
            result.ok, result.message, result.retryable = False, exc.message, exc.retryable
            return result
        if rows is None:
            rows = cur.execute(f"SELECT count(*) FROM {ident(DATA)}").fetchall()[0][0]
        result.rows_in = rows
        checker = _Checker(cur, ctx, address, describe_relation(cur, ident(DATA)), rows)
        broken = []  # checks that are themselves wrong: they fail the job whatever their severity
        for check in checks:
            dog.check()
            kind = next((k for k in KINDS if check.get(k) is not None), None)
            if kind is None:
                continue  # validation guarantees one kind per check
            body = check[kind]
            item = CheckResult(name=check.get("name") or _default_name(kind, body), check=kind, dataset=address,
                               severity=check.get("severity") or "error", passed=False)
            try:
                item.passed, item.failing_rows, item.sample, item.message, item.columns = getattr(checker, kind)(body)
            except ConfigError as exc:
                item.message = str(exc)
                broken.append(id(item))
            except duckdb.InterruptException:
                raise
            except duckdb.Error as exc:
                item.message = f"the check could not run: {str(exc).strip().splitlines()[0]}"
                broken.append(id(item))
            result.checks.append(item)
            ctx.log(f"{'PASS' if item.passed else 'FAIL' if item.severity == 'error' else 'WARN'} "
                    f"{item.name}: {item.message}")
        failed = [c for c in result.checks if not c.passed and (c.severity == "error" or id(c) in broken)]
        warned = [c for c in result.checks if not c.passed and (c.severity != "error" and id(c) not in broken)]
        warnings = ("; warnings: " + "; ".join(f"{c.name}: {c.message}" for c in warned)) if warned else ""
        if failed:
            result.ok = False
            result.message = (f"{len(failed)} of {len(result.checks)} checks failed: "
                              + "; ".join(f"{c.name}: {c.message}" for c in failed) + warnings)
        else:
            passed = sum(c.passed for c in result.checks)
            result.message = f"{passed} of {len(result.checks)} checks passed" + warnings
        return result
