"""Validate-time checks of policies across the repository: dataset patterns, subjects, filters, overlaps.

Pure, and offline: a pattern is checked against the datasets the desired state itself produces
(depots' datasets, workflows' lake outputs), never against recorded state or a live catalog, so
`validate` gives the same answer on a laptop and in CI. The resolver calls `check_policies` and
turns its findings into placed diagnostics.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Iterable

from reconciler.core.access import EVERYONE, glob_match, is_glob
from reconciler.core.resource import Resource
from reconciler.core.scopes import has_opaque_job

# bump when `filter_problem` changes: its verdicts are cached by filter text in the validation memo
FILTER_CHECK_VERSION = 1
FILTER_HINT = "write one boolean expression over the dataset's own columns, e.g. filter: \"region = 'EU'\""
# functions that read files, URLs, tables or settings: a row filter must only look at its own row
_READER_NAMES = frozenset({"query", "query_table", "glob", "sniff_csv", "getenv", "current_setting",
                           "parquet_metadata", "parquet_schema", "parquet_file_metadata", "parquet_kv_metadata",
                           "json_execute_serialized_sql", "load", "install"})
_READER_PREFIXES = ("read_", "duckdb_", "iceberg_", "delta_", "pg_", "sqlite_", "postgres_", "mysql_")
_READER_SUFFIXES = ("_scan", "_query", "_attach", "_execute")


@dataclass(frozen=True)
class Finding:
    """One problem with one policy; the resolver places it at `path` inside the policy's document."""

    policy_id: str
    severity: str  # error | warning
    message: str
    path: tuple
    hint: str | None = None


@dataclass
class DatasetUniverse:
    """The datasets the desired state produces, as far as validate can tell."""

    lake: dict[str, list[str]] = field(default_factory=dict)  # workspace -> lake://WS/TABLE addresses
    depots: dict[str, tuple[str, ...] | None] = field(default_factory=dict)  # name -> listed datasets, None: any
    opaque_workspaces: set[str] = field(default_factory=set)  # jobs there write tables no spec declares
    unsure_lake: bool = False  # an invalid or kept workflow may write more: lake patterns are not judged
    unsure_depots: bool = False  # likewise for depots
    _concrete: dict[str, set[str]] = field(default_factory=dict, repr=False)  # pattern -> its matches

    @classmethod
    def of(cls, resources: Iterable[Resource], writes: Iterable[str], *, unsure_lake: bool = False,
           unsure_depots: bool = False) -> "DatasetUniverse":
        depots: dict[str, tuple[str, ...] | None] = {}
        opaque: set[str] = set()
        for r in resources:
            if r.type == "depot":
                depots[r.name] = depot_datasets(r.spec)
            elif r.type == "workflow" and has_opaque_job(r.spec):
                opaque.add(r.workspace or "")
        return cls.of_facts(depots, writes, opaque, unsure_lake=unsure_lake, unsure_depots=unsure_depots)

    @classmethod
    def of_facts(cls, depots: dict[str, tuple[str, ...] | None], writes: Iterable[str], opaque_workspaces: set[str],
                 *, unsure_lake: bool = False, unsure_depots: bool = False) -> "DatasetUniverse":
        """The universe of depots' listed datasets (`depot_datasets`), written addresses and the workspaces of
        workflows with opaque jobs."""
        u = cls(depots=dict(depots), opaque_workspaces=set(opaque_workspaces), unsure_lake=unsure_lake,
                unsure_depots=unsure_depots)
        for address in sorted(set(writes)):
            if address.startswith("lake://"):
                u.lake.setdefault(address[7:].split("/", 1)[0], []).append(address)
        return u

    def concrete(self, pattern: str) -> set[str]:
        """The known addresses `pattern` matches (for depots listing no datasets there are none to name)."""
        hit = self._concrete.get(pattern)
        if hit is None:
            hit = self._concrete[pattern] = self._match(pattern)
        return hit

    def _match(self, pattern: str) -> set[str]:
        scheme, _, rest = pattern.partition("://")
        head, _, tail = rest.partition("/")
        if scheme == "lake":
            pools = [self.lake.get(head, ())] if not is_glob(head) else self.lake.values()
            if not is_glob(head) and tail in ("*", "**"):  # the common `lake://WS/*`: every table of WS
                return set(pools[0])
            return {a for pool in pools for a in pool if glob_match(pattern, a)}
        if scheme == "depot":
            return {f"depot://{name}/{d}" for name, listed in self.depots.items() if listed
                    for d in listed if glob_match(pattern, f"depot://{name}/{d}")}
        return set()

    def matches(self, pattern: str) -> bool:
        """Whether `pattern` can match a dataset the desired state produces."""
        scheme, _, rest = pattern.partition("://")
        head, _, tail = rest.partition("/")
        if scheme == "lake":
            if self.unsure_lake or any(_head_matches(head, ws) for ws in self.opaque_workspaces):
                return True
        elif scheme == "depot":
            if self.unsure_depots:
                return True
            # a depot that lists no datasets exposes whatever its source holds: any DATASET may exist
            if any(listed is None and _head_matches(head, name) and (tail or "**" in head)
                   for name, listed in self.depots.items()):
                return True
        return bool(self.concrete(pattern))

    def suggestions(self) -> list[str]:
        """Addresses and per-workspace / per-depot patterns, for did-you-mean."""
        out = [a for pool in self.lake.values() for a in pool] + [f"lake://{ws}/*" for ws in self.lake]
        for name, listed in self.depots.items():
            out += [f"depot://{name}/*"] + [f"depot://{name}/{d}" for d in listed or ()]
        return out


def depot_datasets(spec: dict) -> tuple[str, ...] | None:
    """The datasets a depot lists; None when it lists none (then any dataset of its source may exist)."""
    listed = (spec.get("depot") or {}).get("datasets")
    return tuple(listed) if listed else None


def _head_matches(head: str, name: str) -> bool:
    """Whether the first path part of a pattern (`head`) can match the workspace or depot `name`."""
    if "**" in head:  # spans the rest of the address: only what comes before it must match
        return glob_match(head.split("**", 1)[0] + "**", name)
    return glob_match(head, name)


def check_policies(policies: list[Resource], universe: DatasetUniverse, known_subjects: set[str] | None,
                   filter_check: Callable[[str], str | None] | None = None) -> list[Finding]:
    """Every finding about `policies`: unknown dataset patterns, unknown subjects (only when
    `known_subjects` is given), unsafe filters (`filter_check(text)` -> problem or None), and
    allow/deny overlaps (warnings: deny wins, which may or may not be intended)."""
    findings: list[Finding] = []
    filter_check = filter_check or filter_problem
    matched: dict[str, list[tuple[str, set[str]]]] = {}
    for p in policies:
        section = p.spec.get("policy") or {}
        what = f"policy '{p.name}'"
        patterns = []
        for i, pattern in enumerate(section.get("datasets") or ()):
            if not universe.matches(pattern):
                close = difflib.get_close_matches(pattern, universe.suggestions(), n=1, cutoff=0.6)
                findings.append(Finding(
                    p.id, "error", f"{what}: dataset pattern '{pattern}' matches no dataset: no depot or workflow "
                                   f"in the repo produces a dataset matching it",
                    ("policy", "datasets", i),
                    (f"did you mean '{close[0]}'? " if close else "")
                    + "patterns match depot://DEPOT/DATASET (a depot's listed datasets, any when it lists none) "
                      "and lake://WORKSPACE/TABLE (tables workflow jobs write); validate checks only what this "
                      "repository defines"))
            patterns.append((pattern, universe.concrete(pattern)))
        matched[p.id] = patterns
        if known_subjects is not None:
            subjects = section.get("subjects") or {}
            for kind in ("users", "groups"):
                for i, name in enumerate(subjects.get(kind) or ()):
                    if name not in known_subjects:
                        findings.append(Finding(p.id, "error", f"{what}: unknown {kind[:-1]} '{name}': the instance "
                                                               f"config does not know it",
                                                ("policy", "subjects", kind, i), _subject_hint(name, known_subjects)))
        text = section.get("filter")
        if isinstance(text, str):
            problem = filter_check(text)
            if problem:
                findings.append(Finding(p.id, "error", f"{what}: filter {text!r} {problem}", ("policy", "filter"),
                                        FILTER_HINT))
    failed = {f.policy_id for f in findings}  # policies in error are left out: no overlap noise about them
    findings += _overlaps([p for p in policies if p.id not in failed], matched)
    return findings


def _subject_hint(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(k for k in known if k != EVERYONE), n=1, cutoff=0.6)
    text = f"did you mean '{close[0]}'? " if close else ""
    return text + ("subjects are the users and groups of the instance config (reconciler.yaml users: and groups:), "
                   "owner teams of the repository's artefacts, or \"*\" for everyone")


def _named(section: dict) -> tuple[set[str], set[str]]:
    subjects = section.get("subjects") or {}
    return set(subjects.get("users") or ()), set(subjects.get("groups") or ())


def _overlaps(policies: list[Resource], matched: dict[str, list[tuple[str, set[str]]]]) -> list[Finding]:
    """A warning on each deny policy for each allow policy it overrides for a shared subject and dataset."""
    denies = [p for p in policies if (p.spec.get("policy") or {}).get("access") == "deny"]
    if not denies:
        return []
    by_subject: dict[str, list[Resource]] = {}  # "user:u" / "group:g" / "*" -> deny policies naming it
    for d in denies:
        users, groups = _named(d.spec["policy"])
        keys = {f"user:{u}" for u in users} | {f"group:{g}" for g in groups}
        for key in ({EVERYONE} if EVERYONE in users | groups else keys):
            by_subject.setdefault(key, []).append(d)
    out = []
    for a in policies:
        section = a.spec.get("policy") or {}
        if section.get("access") != "allow":
            continue
        users, groups = _named(section)
        if EVERYONE in users | groups:
            candidates = denies
        else:
            keys = [f"user:{u}" for u in users] + [f"group:{g}" for g in groups] + [EVERYONE]
            candidates = sorted({id(d): d for k in keys for d in by_subject.get(k, ())}.values(), key=lambda d: d.id)
        for d in candidates:
            who = _shared_subjects(section, d.spec["policy"])
            where = _shared_datasets(matched.get(a.id, []), matched.get(d.id, []))
            if who and where:
                out.append(Finding(d.id, "warning",
                                   f"policy '{d.name}' denies {who} on {where}, which policy '{a.name}' allows: "
                                   f"deny wins, so '{a.name}' grants nothing there",
                                   ("policy", "access"),
                                   "fine if the exception is intended; otherwise narrow the subjects or datasets "
                                   "of one of the two policies"))
    return out


def _shared_subjects(allow: dict, deny: dict) -> str:
    au, ag = _named(allow)
    du, dg = _named(deny)
    if EVERYONE in du | dg:
        users, groups = au, ag
    elif EVERYONE in au | ag:
        users, groups = du, dg
    else:
        users, groups = au & du, ag & dg
    names = ["everyone"] if EVERYONE in users | groups else \
        [f"user '{u}'" for u in sorted(users)] + [f"group '{g}'" for g in sorted(groups)]
    return ", ".join(names)


def _shared_datasets(allow: list[tuple[str, set[str]]], deny: list[tuple[str, set[str]]]) -> str:
    """Known datasets both policies cover; failing those (depots listing none), a pattern both can match."""
    shared = {a for _, aset in allow for _, dset in deny for a in aset & dset}
    if not shared:
        for ap, _ in allow:
            for dp, _ in deny:
                if ap == dp or glob_match(ap, dp):
                    shared.add(dp)
                elif glob_match(dp, ap):
                    shared.add(ap)
    if not shared:
        return ""
    first = sorted(shared)
    return first[0] + (f" (and {len(first) - 1} more)" if len(first) > 1 else "")


# -- row filters -----------------------------------------------------------------------------------
# Most row filters are plain comparisons of columns with literals (`region = 'EU'`, `amount > 10 AND
# status IN ('a', 'b')`): those are answered without the SQL parser, whose import (~60 ms) each process
# of a cold load would otherwise pay for one verdict. The grammar is deliberately narrow (ASCII names,
# quoted strings without backslashes, plain numbers, no functions or parentheses around terms); anything
# else goes to sqlglot. tests/unit/test_access.py checks the two agree, also for every keyword of
# DuckDB and of sqlglot's DuckDB dialect used as a column name.
_P_NAME = r'(?:[A-Za-z_][A-Za-z0-9_]*|"[^"\\]+")'
_P_VALUE = r"(?:'(?:[^'\\]|'')*'|-?[0-9]+(?:\.[0-9]+)?)"
_P_TERM = (rf"(?:{_P_NAME}\s*(?:=|<>|!=|<=|>=|<|>)\s*{_P_VALUE}"
           rf"|{_P_NAME}\s+(?:NOT\s+)?IN\s*\(\s*{_P_VALUE}(?:\s*,\s*{_P_VALUE})*\s*\)"
           rf"|{_P_NAME}\s+IS\s+(?:NOT\s+)?NULL)")
_PLAIN_FILTER = re.compile(rf"\s*{_P_TERM}(?:\s+(?:AND|OR)\s+{_P_TERM})*\s*", re.IGNORECASE)
# the column name each term starts with (also words inside a string literal: that only declines more)
_P_LEADING_NAME = re.compile(rf"(?:^|\s(?:AND|OR)\s)\s*({_P_NAME})", re.IGNORECASE)
# words sqlglot (DuckDB dialect) does not take as a bare column name at the start of a comparison
_NOT_PLAIN_NAMES = frozenset("""
alter analyze and any as attach begin between cache call case comment commit connect copy create cross delete
desc describe detach disconnect distinct drop else except execute explain fetch for force from glob grant having
if ilike in inner insert install intersect into is join kill lateral like load map merge not notnull null on only
optimize or outer partitioned_by pivot pivot_wider positional pragma prepare qualify regexp rename reset returning
revoke rlike rollback select set show summarize table tablesample then truncate uncache union unpivot update use
using vacuum when where with xor
""".split())


def plain_filter(text: str) -> bool:
    """The filter is a plain comparison (or AND/OR of them) of named columns with literals: a boolean
    predicate over the row's own columns, so `filter_problem` would find nothing wrong with it."""
    if not _PLAIN_FILTER.fullmatch(text):
        return False
    return all(name.startswith('"') or name.lower() not in _NOT_PLAIN_NAMES
               for name in _P_LEADING_NAME.findall(text.strip()))


@lru_cache(maxsize=256)
def filter_problem(text: str) -> str | None:
    """What is wrong with a policy's row filter as a single, self-contained boolean SQL expression
    (DuckDB dialect), or None. It may compare the dataset's own columns and call scalar functions;
    it may not hold statements, subqueries or functions that read files, tables or settings."""
    return None if plain_filter(text) else parsed_filter_problem(text)


def parsed_filter_problem(text: str) -> str | None:
    """`filter_problem` through sqlglot's DuckDB parser, for any filter."""
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import SqlglotError
    from sqlglot.tokens import TokenType

    try:
        tokens = sqlglot.Dialect.get_or_raise("duckdb").tokenize(text)
    except SqlglotError as e:
        return f"is not valid SQL: {_parse_error(e)}"
    if any(t.token_type == TokenType.SEMICOLON for t in tokens):
        return "holds a ';': a filter is one expression, never statements"
    try:
        parsed = [e for e in sqlglot.parse(text, read="duckdb") if e is not None]
    except SqlglotError as e:
        return f"is not valid SQL: {_parse_error(e)}"
    if len(parsed) != 1:
        return "is not one expression" if parsed else "is empty"
    expr = top = parsed[0]
    while isinstance(top, exp.Paren):
        top = top.this
    if isinstance(top, exp.Query):
        return "is a query, not a row predicate"
    if not isinstance(top, exp.Condition):
        return f"is an SQL statement ({type(top).__name__.upper()}), not a row predicate"
    if expr.find(exp.Query, exp.Subquery, exp.Exists, exp.Table) is not None:
        return "contains a subquery or a table reference; a filter may only look at the row's own columns"
    for fn in expr.find_all(exp.Func):
        name = (fn.name if isinstance(fn, exp.Anonymous) else fn.sql_name()).lower()
        if name in _READER_NAMES or name.startswith(_READER_PREFIXES) or name.endswith(_READER_SUFFIXES):
            return f"calls {name}(), which reads files, tables or settings; a filter may only look at the row"
    if not isinstance(top, (exp.Predicate, exp.Connector, exp.Not, exp.Boolean, exp.Column, exp.Func, exp.Case)):
        return f"is not a boolean expression: {top.sql(dialect='duckdb')} is a value, not true or false"
    return None


def _parse_error(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if errors:  # sqlglot's ParseError: say where, without its internal class names
        first = errors[0]
        text = re.sub(r"<class '[\w.]*?(\w+)'>", r"\1", str(first.get("description") or "syntax error"))
        return f"{text} at column {first.get('col')}" if first.get("col") else text
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
