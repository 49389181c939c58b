"""Column-level lineage of a sql job's output, traced with sqlglot through the job's steps.

Lineage is a best effort: SQL that sqlglot cannot follow (an unusual function, a DuckDB-only
clause, a column computed from nothing such as current_timestamp) leaves that column with an
empty list. Nothing here may fail a job, so every error is swallowed.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

try:  # lineage is optional: without sqlglot every column maps to []
    import sqlglot
    from sqlglot import exp
    from sqlglot.lineage import lineage as _lineage
    import sqlglot.dialects.duckdb  # noqa: F401 - the dialect of every trace: loaded with this module, not in a run
except ImportError:  # pragma: no cover - depends on the environment
    sqlglot = None

DIALECT = "duckdb"


def column_lineage(steps: list[tuple[str, str]], inputs: dict[str, str], output_from: str,
                   output_columns: list[str],
                   schemas: dict[str, dict[str, str]] | None = None) -> dict[str, list[tuple[str, str]]]:
    """output column -> [(input dataset address, input column), ...], sorted and without repeats.

    `steps` are (name, SELECT) in order, each able to read the inputs and earlier steps by name;
    `inputs` maps input names to dataset addresses; `schemas` (input name -> {column: type}) lets
    `SELECT *` be expanded. Never raises. Remembered by all of that: a long-lived process (the
    daemon's scheduled runs) traces the same SQL over the same schemas once."""
    try:
        key = (tuple(map(tuple, steps)), tuple(inputs.items()), output_from, tuple(output_columns),
               tuple((t, tuple(cols.items())) for t, cols in (schemas or {}).items()))
        remembered = _remembered(key)
    except TypeError:  # something unhashable in there: trace it without remembering
        return _column_lineage(steps, inputs, output_from, output_columns, schemas or {})
    return {column: list(sources) for column, sources in remembered.items()}


@lru_cache(maxsize=512)
def _remembered(key: tuple) -> dict[str, tuple[tuple[str, str], ...]]:
    steps, inputs, output_from, output_columns, schemas = key
    traced = _column_lineage(list(steps), dict(inputs), output_from, list(output_columns),
                             {t: dict(cols) for t, cols in schemas})
    return {column: tuple(sources) for column, sources in traced.items()}


def _column_lineage(steps: list[tuple[str, str]], inputs: dict[str, str], output_from: str,
                    output_columns: list[str],
                    schemas: dict[str, dict[str, str]]) -> dict[str, list[tuple[str, str]]]:
    result: dict[str, list[tuple[str, str]]] = {column: [] for column in output_columns}
    try:
        by_input = {name.lower(): address for name, address in inputs.items()}
        if output_from.lower() in by_input and output_from not in dict(steps):
            address = by_input[output_from.lower()]
            return {column: [(address, column)] for column in output_columns}
        if sqlglot is None:
            return result
        traced = _trace(steps, output_from, schemas or {})
        if traced is None and schemas:
            # a type sqlglot cannot parse must not cost the lineage: types do not matter here
            traced = _trace(steps, output_from, {t: {c: "TEXT" for c in cols} for t, cols in schemas.items()})
        if not traced:
            return result
        # sqlglot folds unquoted names to lower case; report the inputs' own spelling
        spelling = {(by_input[t.lower()], c.lower()): c for t, cols in (schemas or {}).items()
                    if t.lower() in by_input for c in cols}
        for column in output_columns:
            node = traced.get(column.lower())
            if node is None:
                continue
            found: set[tuple[str, str]] = set()
            _leaves(node, by_input, found)
            result[column] = sorted({(a, spelling.get((a, c.lower()), c)) for a, c in found})
    except Exception:  # noqa: BLE001 - lineage is best effort, never a job failure
        pass
    return result


def _trace(steps: list[tuple[str, str]], output_from: str, schemas: dict[str, dict[str, str]]) -> dict | None:
    """sqlglot lineage nodes for every column of `SELECT * FROM output_from`, by lower-case column name."""
    sources = {name: sql.strip().rstrip(";") for name, sql in steps}
    query = f"SELECT * FROM {exp.to_identifier(output_from).sql(dialect=DIALECT)}"
    try:
        nodes = _lineage(None, query, schema=schemas, sources=sources, dialect=DIALECT, trim_selects=False, copy=False)
    except Exception:  # noqa: BLE001 - an older sqlglot without column=None, or SQL it cannot qualify
        nodes = None
    if isinstance(nodes, dict):
        return {str(name).lower(): node for name, node in nodes.items()}
    return _trace_each(query, sources, schemas)


def _trace_each(query: str, sources: dict, schemas: dict) -> dict | None:
    try:
        parsed = sqlglot.parse_one(query, dialect=DIALECT)
        expanded = exp.expand(parsed, {k: sqlglot.parse_one(v, dialect=DIALECT) for k, v in sources.items()},
                              dialect=DIALECT)
        from sqlglot.optimizer.qualify import qualify
        names = [s.alias_or_name for s in qualify(expanded, dialect=DIALECT, schema=schemas,
                                                  validate_qualify_columns=False).selects]
    except Exception:  # noqa: BLE001
        return None
    traced = {}
    for name in names:
        try:
            traced[name.lower()] = _lineage(name, query, schema=schemas, sources=sources, dialect=DIALECT)
        except Exception:  # noqa: BLE001
            continue
    return traced


def _leaves(node: Any, by_input: dict[str, str], found: set[tuple[str, str]]) -> None:
    stack = [node]
    seen = set()
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if current.downstream:
            stack.extend(current.downstream)
            continue
        source = current.source
        if isinstance(source, exp.Table):
            address = by_input.get(source.name.lower())
            column = current.name.rsplit(".", 1)[-1]
            if address and column and column != "*":
                found.add((address, column))
