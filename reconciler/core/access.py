"""Who may read what: policies decided for one subject and one dataset, and the access diff of a change.

Pure: policies come in as artefact specs, datasets as addresses with their owner team and
column tags. The query engine, the services and the planner's access diff all call
`PolicySet.decide`, so every place data leaves is governed by this one function.

The default is closed: a dataset is readable only by its owner team (the `owner:` of the
workflow or depot that produces it, taken as a group name) and by admins. `access: allow`
opens it to a policy's subjects, `access: deny` closes it to them and wins over every allow,
ownership and admin rights included. Masks and filters apply to every subject a policy names,
owners and admins too: a mask on PII protects it from everyone it names.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Mapping

EVERYONE = "*"
MASK_STRENGTH = {"null": 4, "redact": 3, "hash": 2, "last4": 1}  # when two masks meet, the stronger wins


@dataclass(frozen=True)
class Subject:
    user: str
    groups: frozenset[str] = frozenset()
    admin: bool = False

    def label(self) -> str:
        return self.user


@dataclass(frozen=True)
class Grant:
    """What one subject may do with one dataset."""

    dataset: str
    allowed: bool
    reason: str
    masks: dict[str, str] = field(default_factory=dict)  # column -> hash | redact | null | last4
    filters: tuple[str, ...] = ()  # row predicates, all must hold
    policies: tuple[str, ...] = ()  # the policies that applied


@dataclass(frozen=True)
class DatasetInfo:
    address: str
    owner: str | None
    columns: dict[str, list[str]]  # column -> tags


@dataclass(frozen=True)
class AccessChange:
    subject: str
    dataset: str
    change: str  # gain | lose | mask+ | mask- | filter
    detail: str


@lru_cache(maxsize=1024)
def _glob_re(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def glob_match(pattern: str, address: str) -> bool:
    """`*` matches within one path segment, `**` across segments: `lake://payments/*`, `depot://raw/**`."""
    return _glob_re(pattern).match(address) is not None


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?")


@dataclass(frozen=True)
class _Policy:
    name: str
    users: frozenset[str]
    groups: frozenset[str]
    datasets: tuple[str, ...]
    access: str | None
    masks: tuple[tuple[tuple[str, ...] | None, tuple[str, ...] | None, str], ...]  # (columns, tags, with)
    filter: str | None

    def names(self, subject: Subject) -> bool:
        if EVERYONE in self.users or EVERYONE in self.groups or subject.user in self.users:
            return True
        return not self.groups.isdisjoint(subject.groups)

    def covers(self, dataset: str) -> bool:
        return any(glob_match(p, dataset) for p in self.datasets)


class PolicySet:
    def __init__(self, policies: Iterable[_Policy] = ()):
        self.policies = tuple(sorted(policies, key=lambda p: p.name))

    @classmethod
    def from_specs(cls, items: Iterable[tuple[str, dict]]) -> "PolicySet":
        out = []
        for name, spec in items:
            section = (spec or {}).get("policy") or {}
            subjects = section.get("subjects") or {}
            masks = tuple((tuple(m["columns"]) if m.get("columns") else None,
                           tuple(m["tags"]) if m.get("tags") else None, m.get("with"))
                          for m in section.get("mask") or [])
            out.append(_Policy(name=name, users=frozenset(subjects.get("users") or ()),
                               groups=frozenset(subjects.get("groups") or ()),
                               datasets=tuple(section.get("datasets") or ()), access=section.get("access"),
                               masks=masks, filter=section.get("filter")))
        return cls(out)

    def __bool__(self) -> bool:
        return bool(self.policies)

    def named_subjects(self) -> tuple[set[str], set[str]]:
        """(users, groups) that some policy names, "*" left out."""
        users = {u for p in self.policies for u in p.users if u != EVERYONE}
        groups = {g for p in self.policies for g in p.groups if g != EVERYONE}
        return users, groups

    def decide(self, subject: Subject, dataset: str, owner: str | None,
               columns: Mapping[str, list[str]]) -> Grant:
        applying = [p for p in self.policies if p.covers(dataset) and p.names(subject)]
        denied = [p.name for p in applying if p.access == "deny"]
        allowed = [p.name for p in applying if p.access == "allow"]
        if denied:
            return Grant(dataset, False, f"denied by policy {', '.join(denied)}", policies=tuple(denied))
        if owner and owner in subject.groups | {subject.user}:
            reason = f"owner team {owner}"
        elif subject.admin:
            reason = "admin"
        elif allowed:
            reason = f"allowed by policy {', '.join(allowed)}"
        else:
            return Grant(dataset, False, "no policy allows it (datasets are readable only by their owner team, "
                                         "admins and the subjects an access: allow policy names)")
        masks: dict[str, str] = {}
        used = set(allowed)
        for p in applying:
            # within one policy a rule naming the column beats a rule matching it by tag (it is the more
            # specific intent: "card numbers show last4, other PII is hashed"); across policies the
            # stronger mask wins, so no policy can weaken another's
            mine: dict[str, str] = {}
            for by_name in (False, True):
                for cols, tags, how in p.masks:
                    for col, col_tags in columns.items():
                        hit = (cols is not None and col.lower() in {c.lower() for c in cols}) if by_name else \
                              (tags is not None and not set(tags).isdisjoint(col_tags or ()))
                        if hit:
                            mine[col] = how
            for col, how in mine.items():
                used.add(p.name)
                if MASK_STRENGTH[how] > MASK_STRENGTH.get(masks.get(col, ""), 0):
                    masks[col] = how
        filters = []
        for p in applying:
            if p.filter:
                used.add(p.name)
                filters.append(p.filter)
        return Grant(dataset, True, reason, masks, tuple(filters), tuple(sorted(used)))


def access_diff(old: PolicySet, new: PolicySet, datasets: list[DatasetInfo],
                subjects: list[Subject]) -> list[AccessChange]:
    """What each subject gains or loses on each dataset when `old` policies become `new`."""
    out: list[AccessChange] = []
    for subject in subjects:
        for ds in datasets:
            before = old.decide(subject, ds.address, ds.owner, ds.columns)
            after = new.decide(subject, ds.address, ds.owner, ds.columns)
            who, where = subject.label(), ds.address
            if before.allowed != after.allowed:
                if after.allowed:
                    cols = ", ".join(c for c in ds.columns if c not in after.masks) or "no columns"
                    masked = ", ".join(f"{c} ({m})" for c, m in sorted(after.masks.items()))
                    detail = f"reads {cols}" + (f"; masked {masked}" if masked else "")
                    if after.filters:
                        detail += f"; rows where {' AND '.join(after.filters)}"
                    out.append(AccessChange(who, where, "gain", f"{detail} ({after.reason})"))
                else:
                    out.append(AccessChange(who, where, "lose", after.reason))
                continue
            if not after.allowed:
                continue
            for col in sorted(set(before.masks) | set(after.masks)):
                b, a = before.masks.get(col), after.masks.get(col)
                if b == a:
                    continue
                if a is None:
                    out.append(AccessChange(who, where, "mask-", f"column {col} no longer masked (was {b}): "
                                                                  f"reads it in clear"))
                elif b is None:
                    out.append(AccessChange(who, where, "mask+", f"column {col} now masked with {a}"))
                else:
                    change = "mask+" if MASK_STRENGTH[a] > MASK_STRENGTH[b] else "mask-"
                    out.append(AccessChange(who, where, change, f"column {col} masked with {a} instead of {b}"))
            if set(before.filters) != set(after.filters):
                out.append(AccessChange(who, where, "filter",
                                        f"rows {' AND '.join(before.filters) or 'all'} -> "
                                        f"{' AND '.join(after.filters) or 'all'}"))
    return out


def subjects_for_diff(policies: Iterable[PolicySet], known_users: Mapping[str, Iterable[str]] | None = None,
                      owners: Iterable[str] = ()) -> list[Subject]:
    """The subjects an access diff reports on: each configured user (with its groups), and each user and
    group that a policy names or that owns a dataset, taken on its own."""
    out: dict[str, Subject] = {}
    for name, groups in (known_users or {}).items():
        out[name] = Subject(name, frozenset(groups))
    for ps in policies:
        users, groups = ps.named_subjects()
        for u in users:
            out.setdefault(u, Subject(u))
        for g in groups:
            out.setdefault(f"group:{g}", Subject(f"group:{g}", frozenset({g})))
    for g in owners:
        if g:
            out.setdefault(f"group:{g}", Subject(f"group:{g}", frozenset({g})))
    return [out[k] for k in sorted(out)]
