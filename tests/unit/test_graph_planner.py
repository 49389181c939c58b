"""Unit tests for the pure graph and planner."""
import pytest

from reconciler.core.graph import CycleError, Graph
from reconciler.core.plan import Plan
from reconciler.core.planner import diff_specs, make_plan
from reconciler.core.record import FAILED, READY, Record
from reconciler.core.resolve import Resolution
from reconciler.core.resource import Resource


def test_topological_order_is_stable_and_dependencies_first():
    g = Graph.build({"c": {"a", "b"}, "b": {"a"}, "a": set(), "d": set()})
    assert g.topological() == ["a", "b", "c", "d"]


def test_cycle_is_reported_whole():
    g = Graph.build({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    with pytest.raises(CycleError) as e:
        g.topological()
    cyc = e.value.cycle
    assert cyc[0] == cyc[-1] and set(cyc) == {"a", "b", "c"}


def test_transitive_dependents():
    g = Graph.build({"a": set(), "b": {"a"}, "c": {"b"}, "d": set()})
    assert g.transitive_dependents({"a"}) == {"b", "c"}


def res(rid, spec=None, deps=(), file="f.yaml", prune=True):
    type_, _, name = rid.partition(":")
    spec = spec or {"version": "v1", "type": type_, "name": name}
    return Resource(id=rid, type=type_, name=name, workspace=None, spec=spec, file=file, doc_index=0, line=1,
                    depends_on=set(deps), prune=prune)


def rec(r: Resource, phase=READY, file=None, prune=True):
    return Record(id=r.id, type=r.type, name=r.name, workspace=None, spec=r.spec, hash=r.hash, phase=phase,
                  file=file or r.file, depends_on=sorted(r.depends_on), prune=prune)


def resolution(*resources, invalid=(), broken=()):
    rs = {r.id: r for r in resources}
    order = Graph.build({r.id: r.depends_on for r in resources}).topological()
    return Resolution(resources=rs, invalid_ids=set(invalid), broken_files=set(broken), order=order)


REPLACE = {"depot": (("depot", "kind"),)}


def kinds(plan: Plan):
    return [(a.action, a.id) for a in plan.actions]


def test_create_update_noop_and_retry():
    a, b = res("workspace:a"), res("depot:b", deps=["workspace:a"])
    c = res("policy:c")
    changed = res("policy:c", spec={**c.spec, "description": "new"})
    records = {a.id: rec(a), c.id: rec(c), }
    plan = make_plan(resolution(a, b, changed), records, replace_fields=REPLACE)
    assert sorted(kinds(plan)) == [("create", "depot:b"), ("update", "policy:c")]
    update = next(a for a in plan.actions if a.action == "update")
    assert [(ch.path, ch.before, ch.after, ch.kind) for ch in update.changes] == [("description", None, "new", "added")]
    # same hash but the last apply failed: applied again, with the reason
    records[c.id] = rec(c, phase=FAILED)
    plan = make_plan(resolution(a, c), records, replace_fields=REPLACE)
    assert kinds(plan) == [("update", "policy:c")] and "retry" in plan.actions[0].reason


def test_replace_when_a_forcing_field_changes():
    d = res("depot:d", spec={"type": "depot", "name": "d", "depot": {"kind": "file", "path": "x"}})
    d2 = res("depot:d", spec={"type": "depot", "name": "d", "depot": {"kind": "sqlite", "path": "x"}})
    plan = make_plan(resolution(d2), {d.id: rec(d)}, replace_fields=REPLACE)
    assert kinds(plan) == [("replace", "depot:d")] and "depot.kind" in plan.actions[0].reason


def test_prune_rules_and_reverse_delete_order():
    ws, dep, wf = res("workspace:w"), res("depot:d", deps=["workspace:w"]), res("workflow:f", deps=["depot:d"])
    broken = res("depot:broken", file="broken.yaml")
    invalid = res("depot:invalid")
    keep = res("depot:keep")
    records = {r.id: rec(r) for r in (ws, dep, wf, broken, invalid)}
    records[keep.id] = rec(keep, prune=False)
    plan = make_plan(resolution(invalid=["depot:invalid"], broken=["broken.yaml"]), records, replace_fields=REPLACE)
    deletes = [rid for act, rid in kinds(plan) if act == "delete"]
    assert deletes == ["workflow:f", "depot:d", "workspace:w"]
    keeps = {a.id: a.reason for a in plan.actions if a.action == "keep"}
    assert set(keeps) == {"depot:broken", "depot:invalid", "depot:keep"}
    assert "never pruned" in keeps["depot:broken"] and "prune" in keeps["depot:keep"]
    assert plan.held is None


def test_more_deletes_than_max_prune_hold_the_plan():
    olds = [res(f"depot:d{i}") for i in range(4)]
    plan = make_plan(resolution(), {r.id: rec(r) for r in olds}, max_prune=3, replace_fields=REPLACE)
    assert plan.held and "max_prune (3)" in plan.held
    assert make_plan(resolution(), {r.id: rec(r) for r in olds}, max_prune=3, allow_prune=True,
                     replace_fields=REPLACE).held is None


def test_plan_round_trips_through_json():
    a = res("workspace:a")
    plan = make_plan(resolution(a), {}, commit="c" * 40, serial=7, replace_fields=REPLACE)
    again = Plan.from_json(plan.to_json())
    assert again.state_serial == 7 and again.commit == "c" * 40
    assert again.actions[0].resource.spec == a.spec and again.actions[0].resource.hash == a.hash


def test_diff_paths_name_list_items():
    before = {"workflow": {"dag": [{"name": "a", "spec": {"sql": "x"}}]}}
    after = {"workflow": {"dag": [{"name": "a", "spec": {"sql": "y"}}, {"name": "b"}]}}
    paths = {(c.path, c.kind) for c in diff_specs(before, after)}
    assert ("workflow.dag[0].spec.sql", "changed") in paths and ("workflow.dag[1]", "added") in paths


def test_nothing_that_stays_loses_a_dependency_to_a_prune():
    depot, ws = res("depot:d"), res("workspace:w")
    wf = res("workflow:f", deps=["depot:d"], file="broken.yaml")
    user = res("policy:p", deps=["workspace:w"])
    records = {r.id: rec(r) for r in (depot, ws, wf)}
    plan = make_plan(resolution(user, broken=["broken.yaml"]), records, replace_fields=REPLACE)
    reasons = {a.id: (a.action, a.reason) for a in plan.actions}
    assert reasons["workflow:f"][0] == "keep"
    assert reasons["depot:d"] == ("keep", "kept: workflow:f still depends on it")
    assert reasons["workspace:w"] == ("keep", "kept: policy:p still depends on it")


def _deepdiff_changes(before, after):
    """What diff_specs reported when it was DeepDiff over the whole specs."""
    from deepdiff import DeepDiff

    from reconciler.core.planner import _format_path, _plain

    out = []
    for report, levels in DeepDiff(before, after, view="tree", verbose_level=2).items():
        kind = "added" if report.endswith("_added") else "removed" if report.endswith("_removed") else "changed"
        for level in levels:
            out.append((_format_path(level.path(output_format="list")), kind,
                        repr(None if kind == "added" else _plain(level.t1)),
                        repr(None if kind == "removed" else _plain(level.t2))))
    return sorted(out)


def _mutate(spec, rng):
    """One random edit somewhere in a JSON-like spec: a value, a key added or removed, a list item added,
    removed, replaced or two swapped."""
    import copy

    spec = copy.deepcopy(spec)
    node = spec
    for _ in range(rng.randint(0, 6)):
        children = list(node.values()) if isinstance(node, dict) else node if isinstance(node, list) else []
        children = [c for c in children if isinstance(c, (dict, list)) and c]
        if not children:
            break
        node = rng.choice(children)
    if isinstance(node, dict):
        key = rng.choice(list(node))
        op = rng.choice(["value", "add", "remove", "type"])
        if op == "value":
            node[key] = f"v{rng.randint(0, 99)}"
        elif op == "add":
            node[f"new{rng.randint(0, 9)}"] = rng.choice([1, "x", [1, 2], {"a": 1}])
        elif op == "remove" and len(node) > 1:
            del node[key]
        else:
            node[key] = [node[key]]
    elif isinstance(node, list):
        i = rng.randrange(len(node))
        op = rng.choice(["replace", "insert", "remove", "swap"])
        if op == "replace":
            node[i] = {"replaced": rng.randint(0, 9)}
        elif op == "insert":
            node.insert(i, {"inserted": rng.randint(0, 9)})
        elif op == "remove":
            node.pop(i)
        elif len(node) > 1:
            j = (i + 1) % len(node)
            node[i], node[j] = node[j], node[i]
    return spec


def test_diff_specs_reports_what_deepdiff_over_the_whole_spec_reports():
    import random

    import yaml

    from reconciler.core.resolve import validate
    from tests.cli import repos

    specs = [validate(yaml.safe_load(text)).spec for text in (repos.WORKFLOW, repos.POLICY, repos.DEPOT)]
    rng = random.Random(7)
    checked = 0
    for _ in range(400):
        before = rng.choice(specs)
        after = _mutate(before, rng)
        for _ in range(rng.randint(0, 2)):  # sometimes several edits at once
            after = _mutate(after, rng)
        if after == before:
            continue
        got = sorted((c.path, c.kind, repr(c.before), repr(c.after)) for c in diff_specs(before, after))
        assert got == _deepdiff_changes(before, after), (before, after)
        checked += 1
    assert checked > 300
