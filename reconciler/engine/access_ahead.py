"""The access diff of a cold plan, worked out by the cold load's worker while this process links and plans.

A first `plan` of a large repository ends with its access diff (who gains or loses access to what when
its policies apply): ~0.2-0.3 s on one core for the 10,000-artefact bench, while the other core, whose
worker has finished its share of the files, sits idle. So the worker, once it has validated its share,
gets this process's validated documents too (coldload.SideJob) and runs the same `plan_access` on what
the plan will almost surely be: every valid document a resource, every policy whose recorded hash
differs (or that has no record) created or updated, every recorded policy that left git deleted.

Whether that guess is the plan is checked afterwards, on the facts `plan_access` reads: the resources
(id and validated hash, in resolution order) and the policy changes (name, and new hash or deleted). The
records, the instance's subjects and the state's catalog are the same in both processes (the worker was
forked after they were read, and reads the same catalog). Anything else (a document the resolver
dropped, an inline bundle member, a kept policy, duplicate ids) fails the check, and this process works
the access diff out itself as before: the guess can cost time, never change an answer.
"""
from __future__ import annotations

from pathlib import Path

from reconciler.core.ids import make_id, split_id
from reconciler.core.plan import CREATE, DELETE, REPLACE, UPDATE, Action, Plan
from reconciler.core.record import READY
from reconciler.engine.access_plan import DesiredFacts, dataset_facts
from reconciler.engine.coldload import SideJob, valid_parts

_SETS = (CREATE, UPDATE, REPLACE)


class _Spec:
    __slots__ = ("spec",)

    def __init__(self, spec: dict):
        self.spec = spec


class AccessAhead(SideJob):
    def __init__(self, records, state_dir: Path | None, instance=None):
        self.records, self.state_dir, self.instance = records, state_dir, instance

    # -- both processes: what each validated ---------------------------------------------------------
    def collect(self, path: str, index: int, validated):
        parts = valid_parts(validated)
        if parts is None:
            return None
        spec, hash_, _, (type_, workspace, name) = parts
        # what plan_access reads of it: a policy whole, the datasets a workflow or depot will create
        payload = spec if type_ == "policy" else list(dataset_facts(type_, name, spec))
        return (path, index, make_id(type_, name, workspace), hash_, spec.get("owner"), payload)

    # -- the worker ---------------------------------------------------------------------------------
    def run(self, items: list):
        from reconciler.engine.access_plan import plan_access

        items.sort(key=lambda item: (item[0], item[1]))  # the loader's order: files by path, documents by index
        owners: dict[str, str | None] = {}
        hashes: dict[str, str] = {}
        datasets: list = []
        actions = []
        for _, _, rid, hash_, owner, payload in items:
            if rid in owners:
                return None  # duplicate ids: the resolver reports them, and drops one
            owners[rid], hashes[rid] = owner, hash_
            if rid.startswith("policy:"):
                rec = self.records.get(rid)
                if rec is None or rec.hash != hash_ or rec.phase != READY:
                    actions.append(Action(id=rid, action=UPDATE, type="policy", name=split_id(rid)[2],
                                          resource=_Spec(payload)))
            else:
                datasets += payload
        for rid in sorted(self.records.keys() - owners.keys()):
            rec = self.records[rid]
            if rec.type == "policy":
                actions.append(Action(id=rid, action=DELETE, type="policy", name=rec.name))
        policy_changes = {a.name: ("-" if a.action == DELETE else hashes[a.id]) for a in actions}
        rows = plan_access(Plan(actions=actions), self.records, DesiredFacts(owners, datasets), self.state_dir,
                           self.instance)
        return ([(rid, hashes[rid]) for rid in owners], policy_changes, rows)

    # -- this process -------------------------------------------------------------------------------
    def rows_for(self, plan: Plan, resolution, validated_hash) -> list[dict] | None:
        """The worker's access diff when its guess was this plan (see the module's text), else None.
        `validated_hash(rid)`: the hash a resource's document validated to (before any file hashes)."""
        return fitting(self.answer(), plan, resolution, validated_hash)


def fitting(answer, plan: Plan, resolution, validated_hash) -> list[dict] | None:
    """The rows of the worker's `answer` if what it assumed is what `plan` and `resolution` hold, else None."""
    if answer is None:
        return None
    resources, policy_changes, rows = answer
    real = {a.name: ("-" if a.action == DELETE else a.resource.hash) for a in plan.actions
            if a.type == "policy" and (a.action in _SETS or a.action == DELETE)}
    if real != policy_changes or len(resources) != len(resolution.resources):
        return None
    for (rid, hash_), have in zip(resources, resolution.resources):
        if rid != have or hash_ != validated_hash(rid):
            return None
    return rows
