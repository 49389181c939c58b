"""The first layer of query enforcement: what a user's SQL may say at all.

One read-only query (SELECT, set operations, WITH), parsed with sqlglot in DuckDB's dialect.
Every table it names must be a dataset the caller may read (or one of its own CTEs), named
without any catalog or schema, so nothing reaches past the policy views into the lake or a
depot. No table functions (`read_csv`, `query`, `glob`, ...) and no scalar functions that read
files, settings or the environment. What runs afterwards is sqlglot's own rendering of the
checked tree, never the string the user sent: a comment or dialect trick that parses one way
here cannot execute another way there.

The second layer is the locked-down DuckDB database (lakedb.py); each layer alone was shown
to leak, so both always run.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from reconciler.core.diagnostics import UserError

MAX_SQL = 100_000

# statements and clauses that write, load, configure or leave the database
_FORBIDDEN = tuple(getattr(exp, name) for name in (
    "Insert", "Update", "Delete", "Merge", "Create", "Drop", "Alter", "Command", "Copy", "Attach", "Detach",
    "Set", "Pragma", "Install", "Use", "Into", "Describe", "Transaction", "Commit", "Rollback", "LoadData",
    "Export", "Summarize", "Analyze", "Kill", "Refresh", "Cache", "Uncache", "TruncateTable",
) if hasattr(exp, name))
# scalar or table functions that read files, URLs, settings, the environment or the catalog
_FUNCTION_DENY = re.compile(
    r"^(read_|sniff_|parquet_|duckdb_|pragma_|iceberg_|delta_|st_read|sqlite_|postgres_|mysql_|json_execute|"
    r"query$|query_table|glob$|getenv|current_setting|load|install|which_secret|enable_|disable_|checkpoint|"
    r"force_checkpoint|system|shell|httpfs|http_|import_|export_|arrow_scan|python_|list_files|file_|"
    r"has_table_privilege|set_config)", re.I)
_FILE_FUNCS = tuple(getattr(exp, name) for name in ("ReadCSV", "ReadParquet", "ReadJSON") if hasattr(exp, name))


class QueryRefused(UserError):
    """The SQL is not one safe read-only query over datasets the caller may read (HTTP 400)."""


@dataclass
class Checked:
    tree: exp.Expression
    tables: list[exp.Table]  # every dataset reference, to be rewritten onto the policy views
    names: set[str]  # the dataset names those references use


def _fn_name(node: exp.Expression) -> str:
    if isinstance(node, exp.Anonymous):
        return str(node.name)
    return node.sql_name() if hasattr(node, "sql_name") else type(node).__name__


def check(sql: str) -> Checked:
    """Parse and check `sql`; raise QueryRefused naming what is not allowed and what to write instead."""
    if not isinstance(sql, str) or not sql.strip():
        raise QueryRefused("the query is empty", hint="send one SELECT statement")
    if len(sql) > MAX_SQL:
        raise QueryRefused(f"the query is {len(sql)} characters long; the limit is {MAX_SQL}")
    try:
        statements = [s for s in sqlglot.parse(sql, dialect="duckdb") if s is not None]
    except (ParseError, TokenError) as exc:
        raise QueryRefused(f"the query does not parse: {str(exc).splitlines()[0][:300]}",
                           hint="write one SELECT statement in DuckDB's SQL") from None
    if len(statements) != 1:
        raise QueryRefused(f"send exactly one statement, not {len(statements)}",
                           hint="split the work into separate queries; only one SELECT is run per request")
    tree = statements[0]
    if not isinstance(tree, exp.Query):
        raise QueryRefused(f"only read-only queries are allowed, not {tree.key.upper()}",
                           hint="write a SELECT (WITH, UNION, JOIN and subqueries are fine)")
    ctes = {c.alias_or_name.lower() for c in tree.find_all(exp.CTE)}
    tables, names = [], set()
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise QueryRefused(f"{node.key.upper()} is not allowed in a query",
                               hint="queries are read-only: no writes, ATTACH, COPY, INSTALL, SET or PRAGMA")
        if isinstance(node, _FILE_FUNCS) or (isinstance(node, exp.Func) and _FUNCTION_DENY.match(_fn_name(node))):
            raise QueryRefused(f"function {_fn_name(node).lower()}() is not allowed",
                               hint="read datasets by name (FROM valid or FROM \"lake://WS/TABLE\"), "
                                    "not files, URLs, settings or the catalog")
        if isinstance(node, exp.Column) and (node.args.get("db") or node.args.get("catalog")):
            raise QueryRefused(f"column reference {node.sql(dialect='duckdb')} names a schema or database",
                               hint="qualify columns by table name or alias only")
        if isinstance(node, exp.Table):
            if not isinstance(node.this, exp.Identifier):
                raise QueryRefused(f"table function {node.this.sql(dialect='duckdb')[:80]} is not allowed",
                                   hint="read datasets by name, not through table functions")
            if node.args.get("db") or node.args.get("catalog"):
                raise QueryRefused(f"{node.sql(dialect='duckdb')} names a schema or database",
                                   hint="name a dataset on its own (valid) or by its address "
                                        "(\"lake://payments/valid\"); the lake and depots are not reachable "
                                        "directly")
            name = node.name
            if name.lower() in ctes:
                continue
            tables.append(node)
            names.add(name)
    return Checked(tree, tables, names)
