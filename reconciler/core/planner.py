"""The planner: desired resources + recorded state -> Plan. Pure.

Rules (SPEC.md section 3):
- desired and not recorded: create; recorded with another hash: update, or replace
  when a field that forces replacement changed; same hash but last apply did not
  finish Ready: update again (the reason says why).
- recorded and not desired: delete, unless its document is invalid or its file is
  broken (kept, never pruned because a file broke) or it is annotated
  `reconciler/prune: "false"` (kept, reported).
- more deletes than `max_prune`: the plan is held unless `allow_prune`.
"""
from __future__ import annotations

from reconciler.core.graph import CycleError, Graph
from reconciler.core.plan import CREATE, DELETE, KEEP, REPLACE, UPDATE, Action, Change, Plan
from reconciler.core.record import READY, Record
from reconciler.core.resolve import Resolution
from reconciler.core.resource import Resource

DEFAULT_MAX_PRUNE = 10


def make_plan(resolution: Resolution, records: dict[str, Record], *, commit: str | None = None, source: str = "",
              serial: int = 0, max_prune: int = DEFAULT_MAX_PRUNE, allow_prune: bool = False,
              replace_fields: dict[str, tuple] | None = None, created_at: str = "",
              only: list[str] | None = None) -> Plan:
    """`only`: the desired ids that may be out of sync with their records, in `resolution.order`; the caller
    vouches that every other desired id's record holds its hash and is Ready (engine/warm.py keeps this
    between the plans of one resolution, so a one-file change of 10,000 resources looks at a few). None:
    every desired id is looked at."""
    if replace_fields is None:
        from reconciler.core.scopes import REPLACE_FIELDS as replace_fields
    desired = resolution.resources
    actions: list[Action] = []
    # records that can tell a hash and phase without being built (store/recordcache.py) are built only for
    # the resources that are not in sync
    quick = getattr(records, "hash_and_phase", None)
    for rid in resolution.order if only is None else only:
        r = desired[rid]
        if quick is not None:
            if quick(rid) == (r.hash, READY):
                continue
            rec = records.get(rid)
        else:
            rec = records.get(rid)
            if rec is not None and rec.hash == r.hash and rec.phase == READY:
                continue  # the common case, kept inline: a warm plan of 10,000 resources walks this loop
        a = _action_for(r, rec, replace_fields.get(r.type, ()))
        if a is not None:
            actions.append(a)

    deletes, keeps = [], []
    for rid in sorted(records.keys() - desired.keys()):
        rec = records[rid]
        base = dict(id=rid, type=rec.type, name=rec.name, workspace=rec.workspace, file=rec.file)
        if rid in resolution.invalid_ids:
            keeps.append(Action(action=KEEP, reason="kept: its document is invalid (see the errors above); "
                                                    "its last applied state stays", **base))
        elif rec.file and rec.file in resolution.broken_files:
            keeps.append(Action(action=KEEP, reason=f"kept: its file {rec.file} has errors; never pruned because a file broke", **base))
        elif not rec.prune:
            keeps.append(Action(action=KEEP, reason='kept: left git but annotated reconciler/prune: "false"', **base))
        else:
            deletes.append(Action(action=DELETE, reason="no longer defined in git", **base))
    deletes, held_back = _keep_what_stays_needs(deletes, keeps, desired, records)
    keeps.extend(held_back)
    actions.extend(order_deletes(deletes, records))
    actions.extend(sorted(keeps, key=lambda a: a.id))

    plan = Plan(actions=actions, commit=commit, source=source, state_serial=serial, created_at=created_at,
                order=list(resolution.order),
                diagnostics=[d.to_json() for d in resolution.diagnostics])
    n_del = sum(1 for a in actions if a.action == DELETE)
    if n_del > max_prune and not allow_prune:
        plan.held = (f"this plan deletes {n_del} resources, more than max_prune ({max_prune}); "
                     f"apply with --allow-prune if that is intended, or raise max_prune")
    return plan


def _action_for(r: Resource, rec: Record | None, replace_paths: tuple) -> Action | None:
    base = dict(id=r.id, type=r.type, name=r.name, workspace=r.workspace, file=r.file, resource=r)
    if rec is None or rec.hash is None:
        if rec is None:
            reason = "new"
        elif rec.phase == "Applying":
            reason = "new; the last apply was interrupted before it finished"
        else:
            reason = f"new; never applied successfully (last phase {rec.phase})"
        return Action(action=CREATE, reason=reason, changes=[], **base)
    if rec.hash == r.hash:
        if rec.phase == READY:
            return None
        why = {"Applying": "the last apply was interrupted", "Deleting": "the last delete was interrupted"}.get(
            rec.phase, f"last apply ended {rec.phase}" + (f": {rec.message}" if rec.message else ""))
        return Action(action=UPDATE, reason=f"retry: {why}", **base)
    if rec.spec == r.spec:
        return Action(action=UPDATE, reason="a file it references changed", **base)
    changes = diff_specs(rec.spec or {}, r.spec)
    forced = [p for p in replace_paths if _get(rec.spec, p) != _get(r.spec, p)]
    if forced:
        return Action(action=REPLACE, reason="forces replacement: " + ", ".join(".".join(map(str, p)) for p in forced),
                      changes=changes, **base)
    return Action(action=UPDATE, reason="spec changed", changes=changes, **base)


def _keep_what_stays_needs(deletes: list[Action], keeps: list[Action], desired: dict[str, Resource],
                           records: dict[str, Record]) -> tuple[list[Action], list[Action]]:
    """A resource that left git is not deleted while something that stays (desired, or kept because its
    file broke) still depends on it: deleting it would break what stays."""
    if not deletes:
        return deletes, []
    needs: dict[str, set[str]] = {rid: set(r.depends_on) for rid, r in desired.items()}
    for a in keeps:
        needs[a.id] = set(records[a.id].depends_on) if a.id in records else set()
    by_id = {a.id: a for a in deletes}
    held: list[Action] = []
    changed = True
    while changed:
        changed = False
        for rid in list(by_id):
            users = sorted(u for u, deps in needs.items() if rid in deps)
            if users:
                a = by_id.pop(rid)
                held.append(Action(action=KEEP, id=a.id, type=a.type, name=a.name, workspace=a.workspace, file=a.file,
                                   reason=f"kept: {users[0]} still depends on it"))
                needs[rid] = set(records[rid].depends_on)
                changed = True
    return list(by_id.values()), held


def _get(d, path):
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def order_deletes(deletes: list[Action], records: dict[str, Record]) -> list[Action]:
    ids = {a.id for a in deletes}
    g = Graph.build({a.id: {d for d in records[a.id].depends_on if d in ids} for a in deletes})
    try:
        order = g.topological()
    except CycleError:
        order = sorted(ids)
    by_id = {a.id: a for a in deletes}
    return [by_id[i] for i in reversed(order)]


def _format_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def diff_specs(before: dict, after: dict) -> list[Change]:
    """Field-level changes, paths like `workflow.dag[0].spec.steps[0].sql`. Only called for changed hashes.

    deepdiff takes ~5 ms for one edit in a 1.5 KB workflow (it pairs list items up to find moves), so the
    walk first goes down through what has the same shape on both sides (mappings with the same keys, lists
    with one differing item at the same index), where deepdiff would go down the same way, and hands it
    only the smallest part that differs in shape or has several differing items."""
    changes: list[Change] = []
    _descend(before, after, [], changes)
    changes.sort(key=lambda c: c.path)
    return changes


def _descend(before, after, path: list, changes: list[Change]) -> None:
    if type(before) is dict and type(after) is dict and before.keys() == after.keys():
        for key, value in before.items():
            if value != after[key]:
                _descend(value, after[key], path + [key], changes)
        return
    if type(before) is list and type(after) is list and len(before) == len(after):
        differing = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
        if len(differing) == 1:
            i = differing[0]
            _descend(before[i], after[i], path + [i], changes)
            return
    if before == after:
        return
    changes.extend(_deepdiff(before, after, path))


def _deepdiff(before, after, prefix: list) -> list[Change]:
    if not isinstance(before, (dict, list)) or not isinstance(after, (dict, list)) or type(before) is not type(after):
        return [Change(path=_format_path(prefix), before=before, after=after, kind="changed")]
    from deepdiff import DeepDiff  # lazy: deepdiff takes ~50 ms to import; a changed value needs none of it

    tree = DeepDiff(before, after, view="tree", verbose_level=2)
    changes: list[Change] = []
    for report, levels in tree.items():
        kind = "added" if report.endswith("_added") else "removed" if report.endswith("_removed") else "changed"
        for level in levels:
            path = _format_path(prefix + level.path(output_format="list"))
            before_v = None if kind == "added" else _plain(level.t1)
            after_v = None if kind == "removed" else _plain(level.t2)
            changes.append(Change(path=path, before=before_v, after=after_v, kind=kind))
    return changes


def _plain(v):
    from deepdiff.helper import NotPresent

    return None if isinstance(v, NotPresent) else v
