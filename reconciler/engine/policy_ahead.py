"""The policy checks of a cold load, worked out by its worker while this process links.

The checks run once every document is validated (core/policy_checks.py: patterns, subjects, filters and
allow/deny overlaps); placing what they find means composing each policy file again for positions. On the
10,000-artefact bench that was ~0.06 s of the resolve's serial end (~0.025 s of checks, ~0.035 s placing 800
overlap warnings from 400 files), while the worker, its share of the files done, sat idle. So the worker
gets this process's validated documents too (coldload.SideJob), runs the same checks on what the resolution
will almost surely hold (every valid document a resource) and finds each finding's line and column. A cold
`validate` and the daemon's full resolves give it this job; a cold `plan` gives it this one and then the
access diff (engine/access_ahead.py), which the plan reads after the resolve has read these.

Whether that guess is what the resolver holds is checked on what the checks read, all of it a function of
the resources: the resolution's resources must be the worker's, id and validated hash (equal hashes, equal
specs) in the same order, and no invalid or kept resource may leave the datasets unsure (the resolver asks
only then). Anything else (an inline bundle member, duplicate ids) fails the check, and this process works
the findings out itself as before: the guess can cost time, never change an answer.
"""
from __future__ import annotations

from reconciler.core.ids import make_id
from reconciler.core.policy_checks import EVERYONE, DatasetUniverse, Finding, check_policies, depot_datasets
from reconciler.core.resolve import LOCATE, subject_names
from reconciler.core.scopes import has_opaque_job, workspace_scoped
from reconciler.engine.coldload import SideJob, valid_parts


class _Policy:
    """What the checks read of a policy resource."""

    __slots__ = ("id", "name", "spec")

    def __init__(self, rid: str, name: str, spec: dict):
        self.id, self.name, self.spec = rid, name, spec


class PolicyAhead(SideJob):
    def __init__(self, source, known_subjects: frozenset[str] | None):
        self.source = source  # the worker reads the policy files from it for positions
        self.subjects = None if known_subjects is None else frozenset(known_subjects)

    # -- both processes: what each validated ---------------------------------------------------------
    def collect(self, path: str, index: int, validated):
        parts = valid_parts(validated)
        if parts is None:
            return None
        spec, hash_, refs, (type_, workspace, name) = parts
        writes = [target for kind, target, *_ in refs if kind == "write"]
        workspace = workspace if workspace_scoped(type_) else None
        fact = spec if type_ == "policy" else depot_datasets(spec) if type_ == "depot" else \
            type_ == "workflow" and has_opaque_job(spec)
        subjects = tuple(subject_names(spec)) if self.subjects is not None else ()
        return (path, index, make_id(type_, name, workspace), type_, name, workspace, hash_, writes, fact, subjects)

    # -- the worker ---------------------------------------------------------------------------------
    def run(self, items: list):
        from reconciler.core.locate import YamlLocator

        items.sort(key=lambda item: (item[0], item[1]))  # the loader's order: files by path, documents by index
        seen: set[str] = set()
        policies, where = [], {}
        depots: dict = {}
        opaque: set[str] = set()
        writes: list[str] = []
        named: set[str] = set()
        for path, index, rid, type_, name, workspace, hash_, written, fact, subjects in items:
            if rid in seen:
                return None  # duplicate ids: the resolver reports them, and drops one
            seen.add(rid)
            writes += written
            named.update(subjects)
            if type_ == "policy":
                policies.append(_Policy(rid, name, fact))
                where[rid] = (path, index)
            elif type_ == "depot":
                depots[name] = fact
            elif fact:  # a workflow with a job whose outputs no spec declares
                opaque.add(workspace or "")
        if not policies:
            return None
        universe = DatasetUniverse.of_facts(depots, writes, opaque)
        subjects = None if self.subjects is None else set(self.subjects) | {EVERYONE} | named
        findings = check_policies(policies, universe, subjects)
        locate = YamlLocator(self.source.read).locate
        return (tuple((item[2], item[6]) for item in items),
                [(f.policy_id, f.severity, f.message, f.path, f.hint, locate(*where[f.policy_id], f.path))
                 for f in findings])

    # -- this process -------------------------------------------------------------------------------
    def resolver_hook(self):
        return self.findings

    def findings(self, resources: dict, validated_hash) -> list | None:
        """[(Finding, position or LOCATE)] of the worker, when it checked these resources (see the module's text)."""
        answer = self.answer()
        if answer is None:
            return None
        checked, rows = answer
        if len(checked) != len(resources):
            return None
        for (rid, hash_), have in zip(checked, resources):
            if rid != have or hash_ != validated_hash(rid):
                return None
        # a position the worker could not find (a file it could not read or compose) is looked for here again
        return [(Finding(rid, severity, message, path, hint), at or LOCATE)
                for rid, severity, message, path, hint, at in rows]
