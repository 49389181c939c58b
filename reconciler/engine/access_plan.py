"""The access diff of a plan: who gains or loses access to which datasets and columns when it applies.

Old policies are the recorded ones; new ones are what the state will hold after the plan (recorded,
minus deletes, plus creates and updates). Datasets are the catalog's (with their column tags) plus
the ones the desired state will create (workflows' lake outputs, depots' listed datasets). Only
datasets a changed policy covers and subjects a changed policy names can change, so only those are
decided: a one-policy change of a large platform stays cheap. Plans that touch no policy skip all of it.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from reconciler.core.access import (EVERYONE, DatasetInfo, PolicySet, Subject, access_diff, glob_match, is_glob,
                                    subjects_for_diff)
from reconciler.core.diagnostics import UserError
from reconciler.core.plan import CREATE, DELETE, REPLACE, UPDATE, Plan

if TYPE_CHECKING:  # pragma: no cover
    from reconciler.core.record import Record
    from reconciler.core.resource import Resource

# the stacks whose outputs are lake tables the desired state will create
WRITING_STACKS = ("sql", "python")


@dataclass(frozen=True)
class InstanceSubjects:
    """Who the instance config (reconciler.yaml) knows: its users with their groups, and its groups."""

    users: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (user, groups), sorted
    groups: frozenset[str] = frozenset()  # config groups and every group a user belongs to
    admin_groups: frozenset[str] = frozenset()

    @classmethod
    def from_config(cls, config) -> "InstanceSubjects":
        users = tuple(sorted((name, tuple(sorted(u.groups))) for name, u in (config.users or {}).items()))
        declared = dict(config.groups or {})
        admins = frozenset(g for g, v in declared.items()
                           if (v.get("admin") if isinstance(v, dict) else getattr(v, "admin", False)))
        return cls(users, frozenset(declared) | {g for _, gs in users for g in gs}, admins)

    @classmethod
    def load(cls, path: Path | None) -> "InstanceSubjects | None":
        """The subjects of the config file at `path` (None: no config). Only users: and groups: matter here;
        the rest of the file is still validated, so a broken config is reported, not half-read."""
        if path is None:
            return None
        from reconciler.daemon.config import load_config

        # `repo` is required of a daemon config but means nothing to validate/plan, which read --repo
        return cls.from_config(load_config(Path(path), {"repo": "."}))

    @property
    def checkable(self) -> bool:
        """A config that declares no users and no groups says nothing about subjects: nothing is checked."""
        return bool(self.users or self.groups)

    def key(self) -> str:
        """A stable text identity (frozensets print in a per-process order), for the plan memo's key."""
        return repr((self.users, sorted(self.groups), sorted(self.admin_groups)))

    def names(self) -> frozenset[str]:
        """User and group names, for validating policies' subjects."""
        return frozenset(u for u, _ in self.users) | self.groups

    def known_for_validation(self) -> frozenset[str] | None:
        return self.names() if self.checkable else None

    def subjects(self) -> list[Subject]:
        return [Subject(name, frozenset(groups), admin=not self.admin_groups.isdisjoint(groups))
                for name, groups in self.users]


def touches_policies(plan: Plan) -> bool:
    return any(a.type == "policy" and a.action in (CREATE, UPDATE, REPLACE, DELETE) for a in plan.actions)


def plan_access(plan: Plan, records: dict[str, "Record"], desired: "dict[str, Resource] | DesiredFacts",
                state_dir: Path | None, instance: InstanceSubjects | None = None) -> list[dict]:
    """The access changes `plan` makes, as dicts {subject, dataset, change, detail}, ordered by dataset and
    subject; [] at once when the plan creates, updates or deletes no policy. `desired`: the desired resources,
    or only what is read of them (DesiredFacts, engine/access_ahead.py)."""
    if not touches_policies(plan):
        return []
    old_specs = {r.name: r.spec for r in records.values() if r.type == "policy" and r.spec}
    new_specs = dict(old_specs)
    for a in plan.actions:
        if a.type != "policy":
            continue
        if a.action == DELETE:
            new_specs.pop(a.name, None)
        elif a.action in (CREATE, UPDATE, REPLACE) and a.resource is not None:
            new_specs[a.name] = a.resource.spec
    changed = sorted(n for n in old_specs.keys() | new_specs.keys() if old_specs.get(n) != new_specs.get(n))
    if not changed:
        return []
    old, new = PolicySet.from_specs(old_specs.items()), PolicySet.from_specs(new_specs.items())
    touched = [p for ps in (old, new) for p in ps.policies if p.name in changed]
    index = AddressIndex(())

    def covered(addresses: list[str]) -> set[str]:  # keeps the index of every known address for below
        nonlocal index
        index = AddressIndex(addresses)
        return set(index.covering(touched))

    datasets, planned = _known_datasets(records, desired, state_dir, covered)
    touching, before, after = (index.covering(ps) for ps in (touched, old.policies, new.policies))
    owners = sorted({d.owner for d in datasets if d.owner})
    subjects = subjects_for_diff([old, new], dict(instance.users) if instance else None, owners)
    if instance:  # configured users with their admin rights, which subjects_for_diff does not know
        configured = {s.user: s for s in instance.subjects()}
        subjects = [configured.get(s.user, s) for s in subjects]
    by_name = {s.user: s for s in subjects}  # users by name, groups as group:NAME
    by_group: dict[str, list[Subject]] = {}
    for s in subjects:
        for g in s.groups:
            by_group.setdefault(g, []).append(s)
    # datasets with the same covering policies, owner and columns get the same decisions: decide once per
    # group (a workspace's tables under `lake://WS/*` are one group), then name each dataset
    groups: dict[tuple, list[DatasetInfo]] = {}
    for ds in datasets:
        a = ds.address
        key = (tuple(p.name for p in before.get(a, ())), tuple(p.name for p in after.get(a, ())), ds.owner,
               tuple((c, tuple(t)) for c, t in ds.columns.items()), a in planned)
        groups.setdefault(key, []).append(ds)
    rows: list[tuple[str, str, str, str]] = []  # (dataset, subject, change, detail)
    for group in groups.values():
        first = group[0].address
        here = touching.get(first, ())
        users = {u for p in here for u in p.users}
        named = {g for p in here for g in p.groups}
        if EVERYONE in users | named:
            who = subjects
        else:  # only the subjects a changed policy names can see a change
            found = {u: by_name[u] for u in users if u in by_name}
            found.update((s.user, s) for g in named for s in by_group.get(g, ()))
            who = [found[k] for k in sorted(found)]
        if not who:
            continue
        # only the policies covering these datasets decide about them: the same answer, far fewer globs
        now = PolicySet(after.get(first, ()))
        for c in access_diff(PolicySet(before.get(first, ())), now, [group[0]], who):
            detail = c.detail
            if c.change == "gain" and first in planned:
                detail = _uncatalogued(detail, group[0], now, by_name[c.subject])
            rows += [(ds.address, c.subject, c.change, detail) for ds in group]
    rows.sort(key=itemgetter(0, 1, 2))  # stable: a subject's changes on a dataset keep their order
    return [{"subject": s, "dataset": d, "change": c, "detail": detail} for d, s, c, detail in rows]


class AddressIndex:
    """Which policies cover which addresses, with `glob_match`'s meaning. Addresses are grouped by workspace or
    depot, and the usual `.../*` and `.../**` tails need no regex: a plan over thousands of datasets and
    policies must not glob all against all."""

    def __init__(self, addresses: Iterable[str]):
        self.addresses = list(addresses)
        self.by_head: dict[tuple[str, str], tuple[list[str], list[str]]] = {}  # -> (one part below, any below)
        for a in self.addresses:
            scheme, head = _head(a)
            rest = a[len(scheme) + 3 + len(head):]
            if rest.startswith("/"):
                one, anything = self.by_head.setdefault((scheme, head), ([], []))
                anything.append(a)
                if "/" not in rest[1:]:
                    one.append(a)
        self._covered: dict[int, tuple] = {}  # id(policy) -> (policy, the addresses it covers)
        self._answers: dict[tuple, tuple] = {}  # ids of the policies asked about -> (policies, answer)

    def addresses_of(self, policy) -> set[str]:
        hit = self._covered.get(id(policy))
        if hit is None:
            found: set[str] = set()
            for pattern in policy.datasets:
                scheme, head = _head(pattern)
                tail = pattern[len(scheme) + 3 + len(head):]  # "" or "/..."
                if is_glob(head):
                    found.update(a for a in self.addresses if glob_match(pattern, a))
                    continue
                one, anything = self.by_head.get((scheme, head), ((), ()))
                if tail == "/*":
                    found.update(one)
                elif tail == "/**":
                    found.update(anything)
                else:
                    found.update(a for a in anything if glob_match(pattern, a))
            hit = self._covered[id(policy)] = (policy, found)  # the policy is kept: its id stays its own
        return hit[1]

    def covering(self, policies) -> dict[str, list]:
        """address -> the policies that cover it; addresses none covers are left out. The same policies
        asked about again (a first plan's changed policies are all its new ones) get the same answer,
        which the caller must not change."""
        policies = tuple(policies)
        key = tuple(map(id, policies))
        hit = self._answers.get(key)
        if hit is not None:
            return hit[1]
        out: dict[str, list] = {}
        get = out.get
        for p in policies:
            for a in self.addresses_of(p):
                found = get(a)
                if found is None:
                    out[a] = [p]
                else:
                    found.append(p)
        self._answers[key] = (policies, out)  # the policies are kept: their ids stay their own
        return out


def _head(address: str) -> tuple[str, str]:
    scheme, _, rest = address.partition("://")
    return scheme, rest.split("/", 1)[0]


def _uncatalogued(detail: str, ds: DatasetInfo, policies: PolicySet, subject: Subject) -> str:
    """A gain on a dataset not catalogued yet: only its tagged columns are known, so "reads a, b" would
    understate what the subject reads."""
    grant = policies.decide(subject, ds.address, ds.owner, ds.columns)
    known = "reads " + (", ".join(c for c in ds.columns if c not in grant.masks) or "no columns")
    if detail.startswith(known):
        return "reads every column (not catalogued yet)" + detail[len(known):]
    return detail


def known_datasets(records: dict[str, "Record"], desired: dict[str, "Resource"], state_dir: Path | None,
                   select=None) -> list[DatasetInfo]:
    """Datasets of the catalog (with column tags) and those the desired state will create, each with its
    owner team (the `owner:` of the depot or workflow that produces it). `select(addresses)` -> the subset
    to keep (default all); only kept catalog datasets have their columns read."""
    return _known_datasets(records, desired, state_dir, select)[0]


@dataclass(frozen=True)
class DesiredFacts:
    """What the access diff reads of the desired resources: each one's `owner:` by id, and the datasets
    they will create (address, owner, column tags) in resource order, as `dataset_facts` gives them."""

    owners: dict[str, str | None]
    datasets: list[tuple[str, str | None, dict[str, list[str]]]]


def _known_datasets(records, desired, state_dir, select) -> tuple[list[DatasetInfo], set[str]]:
    """known_datasets, and the addresses among them that are not catalogued yet."""
    facts = desired if isinstance(desired, DesiredFacts) else None

    def owner_of(rid: str):  # only for the datasets read below: specs of restored resources load on use
        if facts is not None:
            if rid in facts.owners:
                return facts.owners[rid]
        else:
            r = desired.get(rid)
            if r is not None:
                return r.spec.get("owner")
        rec = records.get(rid)
        return (rec.spec or {}).get("owner") if rec is not None else None

    created = facts.datasets if facts is not None else _desired_datasets(desired.values())
    planned = {a: (owner, columns) for a, owner, columns in created}
    with _catalog(state_dir) as catalog:
        rows = {r["address"]: r for r in (catalog.datasets() if catalog is not None else ())}
        keep = select(sorted(rows.keys() | planned.keys())) if select else rows.keys() | planned.keys()
        catalogued = catalog.columns_of(a for a in keep if a in rows) if catalog is not None else {}
        found: dict[str, DatasetInfo] = {}
        for address in sorted(keep):
            row = rows.get(address)
            if row is not None:
                owner = owner_of(row.get("owner_resource") or "") or row.get("owner")
                columns = {c["name"]: list(c.get("tags") or ()) for c in catalogued.get(address, ())}
                found[address] = DatasetInfo(address, owner, columns)
            else:
                found[address] = DatasetInfo(address, *planned[address])
    return list(found.values()), {a for a in found if a not in rows}


@contextlib.contextmanager
def _catalog(state_dir: Path | None):
    """The state's catalog, or None when there is no state or the daemon holds it (the desired datasets
    still show then, without column tags)."""
    if state_dir is None or not (Path(state_dir) / "state.duckdb").exists():
        yield None
        return
    from reconciler.store.state import StateStore

    try:
        store = StateStore.open(Path(state_dir), read_only=True)
    except UserError:
        yield None
        return
    with store:
        yield store.catalog


def _desired_datasets(resources: Iterable["Resource"]) -> Iterable[tuple[str, str | None, dict[str, list[str]]]]:
    for r in resources:
        yield from dataset_facts(r.type, r.name, r.spec)


def dataset_facts(type_: str, name: str, spec: dict) -> Iterable[tuple[str, str | None, dict[str, list[str]]]]:
    """The datasets a desired resource will create: (address, owner team, column tags)."""
    if type_ == "workflow":
        for job in (spec.get("workflow") or {}).get("dag") or ():
            if job.get("stack") not in WRITING_STACKS:
                continue
            for o in (job.get("spec") or {}).get("outputs") or ():
                address = o.get("dataset") if isinstance(o, dict) else None
                if isinstance(address, str) and address.startswith("lake://"):
                    yield address, spec.get("owner"), {}  # columns unknown until the job runs
    elif type_ == "depot":
        section = spec.get("depot") or {}
        tags: dict[str, dict[str, list[str]]] = {}
        for key, value in (section.get("column_tags") or {}).items():
            dataset, _, column = key.rpartition(".")
            tags.setdefault(dataset, {})[column] = list(value or ())
        for dataset in section.get("datasets") or ():
            yield f"depot://{name}/{dataset}", spec.get("owner"), tags.get(dataset, {})
