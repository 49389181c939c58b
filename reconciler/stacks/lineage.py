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


def plain_column_lineage(steps: list[tuple[str, str]], inputs: dict[str, str], output_from: str,
                         output_columns: list[str],
                         schemas: dict[str, dict[str, str]] | None = None) -> dict[str, list[tuple[str, str]]] | None:
    """What column_lineage returns, when the output is an input as it is or the steps are plain enough to trace
    without sqlglot's optimizer (see `_plain_lineage`): ~0.1 ms, cheap enough to run in line. None: ask
    column_lineage. Never raises."""
    try:
        by_input = {name.lower(): address for name, address in inputs.items()}
        if output_from.lower() in by_input and output_from not in dict(steps):  # an input written as it is
            address = by_input[output_from.lower()]
            return {column: [(address, column)] for column in output_columns}
        if sqlglot is None:
            return None
        return _plain_lineage(steps, by_input, output_from, output_columns, schemas or {})
    except Exception:  # noqa: BLE001 - lineage is best effort, never a job failure
        return None


def _column_lineage(steps: list[tuple[str, str]], inputs: dict[str, str], output_from: str,
                    output_columns: list[str],
                    schemas: dict[str, dict[str, str]]) -> dict[str, list[tuple[str, str]]]:
    plain = plain_column_lineage(steps, inputs, output_from, output_columns, schemas)
    return plain if plain is not None else _traced_lineage(steps, inputs, output_from, output_columns, schemas)


def _traced_lineage(steps: list[tuple[str, str]], inputs: dict[str, str], output_from: str,
                    output_columns: list[str],
                    schemas: dict[str, dict[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """The lineage as sqlglot's lineage traces it (its optimizer qualifies the whole chain of steps)."""
    result: dict[str, list[tuple[str, str]]] = {column: [] for column in output_columns}
    try:
        if sqlglot is None:
            return result
        by_input = {name.lower(): address for name, address in inputs.items()}
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


# ---- the plain case, without sqlglot's optimizer ----------------------------------------------------
# sqlglot's lineage qualifies and walks the whole chain of steps for every trace: ~1.2-2.7 ms of pure Python
# per job, which on a run's busy CPUs cost the 20-job bench ~0.035 s of its ~0.4 s (bench/README.md). Most
# steps are plain: one SELECT of columns and expressions over inputs and earlier steps, joined by name. Those
# are traced here from sqlglot's parse alone (~0.1 ms), to exactly what sqlglot's lineage reports for them
# (tests/unit/test_lineage_plain.py compares both on every shape); anything else (a subquery, a CTE, a set
# operation, a lateral alias, a name it cannot place for sure) returns None and goes to sqlglot's lineage.

class _NotPlain(Exception):
    """A step this module's plain tracing does not cover: sqlglot's lineage traces it."""


# nodes a plain step never holds: its FROM is named relations and its expressions read only their columns
_NOT_PLAIN = tuple(getattr(exp, name) for name in (
    "Subquery", "Select", "SetOperation", "With", "CTE", "Lateral", "Unnest", "Lambda", "Columns", "Dot",
    "PropertyEQ", "Kwarg", "Pivot", "Unpivot", "Values", "Placeholder", "Parameter") if hasattr(exp, name)) \
    if sqlglot is not None else ()


def _plain_lineage(steps: list[tuple[str, str]], by_input: dict[str, str], output_from: str,
                   output_columns: list[str],
                   schemas: dict[str, dict[str, str]]) -> dict[str, list[tuple[str, str]]] | None:
    """The lineage of `output_from` when every step it reads is plain, else None."""
    columns = {name.lower(): list(cols) for name, cols in schemas.items()}  # input name -> its columns, in order
    traced: dict[str, dict[str, frozenset[tuple[str, str]]]] = {}  # step -> column (lower) -> (address, column)
    order: dict[str, list[str]] = {}  # step -> its columns (lower), in order
    try:
        for name, sql in steps:
            key = name.lower()
            if key in traced or key in by_input:  # a step shadowing an input or a step: sqlglot's call
                return None
            order[key], traced[key] = _plain_step(sql, by_input, traced, order, columns)
            if key == output_from.lower():
                break
        else:
            return None
    except _NotPlain:
        return None
    except Exception:  # noqa: BLE001 - SQL sqlglot cannot parse: its lineage finds nothing either
        return None
    step = traced[output_from.lower()]
    spelling = {(by_input[t.lower()], c.lower()): c for t, cols in schemas.items() if t.lower() in by_input
                for c in cols}
    out = {}
    for column in output_columns:
        found = step.get(column.lower())
        if found is None:
            return None  # DuckDB named it otherwise (an expression without an alias): sqlglot's call
        out[column] = sorted({(a, spelling.get((a, c.lower()), c)) for a, c in found})
    return out


def _plain_step(sql: str, by_input: dict[str, str], traced: dict, order: dict, columns: dict
                ) -> tuple[list[str], dict[str, frozenset[tuple[str, str]]]]:
    """(the step's columns in order, column -> the input columns it is computed from), or _NotPlain."""
    tree = sqlglot.parse_one(sql, dialect=DIALECT)
    if not isinstance(tree, exp.Select) or any(tree.args.get(k) for k in ("with", "with_", "windows", "exclude")):
        raise _NotPlain
    if any(isinstance(node, _NOT_PLAIN) for node in tree.walk() if node is not tree):
        raise _NotPlain
    # the relations it reads: alias -> (step or input name), in FROM order
    relations: dict[str, str] = {}
    source = tree.args.get("from_") or tree.args.get("from")
    tables = ([source.this] if source else []) + [j.this for j in tree.args.get("joins") or []]
    if not source and tables:  # joins without a FROM; no FROM at all is a row of constants, from nothing
        raise _NotPlain
    for table in tables:
        if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier) \
                or table.args.get("db") or table.args.get("catalog"):
            raise _NotPlain
        name = table.name.lower()
        if name not in traced and name not in by_input:
            raise _NotPlain  # a relation that is neither: sqlglot reports what it makes of it
        alias = table.alias_or_name.lower()
        if alias in relations:
            raise _NotPlain
        relations[alias] = name
    known = {alias: (order[name] if name in traced else
                     [c.lower() for c in columns[name]] if name in columns else None)
             for alias, name in relations.items()}

    def leaves(alias: str, column: str) -> frozenset[tuple[str, str]]:
        name = relations[alias]
        if name in traced:
            if column not in traced[name]:
                raise _NotPlain
            return traced[name][column]
        if known[alias] is not None and column not in known[alias]:
            raise _NotPlain
        return frozenset({(by_input[name], column)})

    def place(col: exp.Column) -> str:
        if col.args.get("db") or col.args.get("catalog"):
            raise _NotPlain
        if col.table:
            if col.table.lower() not in relations:
                raise _NotPlain  # a struct's field, say
            return col.table.lower()
        having = [a for a, cols in known.items() if cols is None or col.name.lower() in cols]
        if len(having) != 1 or (known[having[0]] is None and len(relations) > 1):
            raise _NotPlain  # ambiguous, unknown, or a lateral alias
        return having[0]

    out_order: list[str] = []
    out: dict[str, frozenset[tuple[str, str]]] = {}

    def add(name: str, found: frozenset[tuple[str, str]]) -> None:
        if name in out:
            raise _NotPlain  # DuckDB renames a repeated name
        out_order.append(name)
        out[name] = found

    aliases = {e.alias.lower() for e in tree.expressions if isinstance(e, exp.Alias)}
    for projection in tree.expressions:
        if isinstance(projection, exp.Star) or (isinstance(projection, exp.Column) and isinstance(projection.this, exp.Star)):
            if isinstance(projection, exp.Star) and any(projection.args.values()):
                raise _NotPlain  # EXCLUDE, REPLACE, RENAME
            if isinstance(projection, exp.Column) and (projection.args.get("db") or
                                                       projection.table.lower() not in relations):
                raise _NotPlain
            for alias in ([projection.table.lower()] if isinstance(projection, exp.Column) else list(relations)):
                if known[alias] is None:
                    raise _NotPlain  # a star over columns nobody told
                for column in known[alias]:
                    add(column, leaves(alias, column))
            continue
        if isinstance(projection, exp.Alias):
            name, body = projection.alias.lower(), projection.this
        elif isinstance(projection, exp.Column):
            name, body = projection.name.lower(), projection
        else:
            raise _NotPlain  # DuckDB names it after its text
        found: set[tuple[str, str]] = set()
        for col in ([body] if isinstance(body, exp.Column) else body.find_all(exp.Column)):
            if isinstance(col.this, exp.Star):
                raise _NotPlain
            if not col.table and col.name.lower() in aliases and not any(
                    cols is not None and col.name.lower() in cols for cols in known.values()):
                raise _NotPlain  # may read the alias of another column (DuckDB's lateral aliases)
            found |= leaves(place(col), col.name.lower())
        add(name, frozenset(found))
    return out_order, out


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
            if len(column) > 1 and column[0] == column[-1] == '"':  # sqlglot names a quoted column with its quotes
                column = column[1:-1].replace('""', '"')
            if address and column and column != "*":
                found.add((address, column))
