"""The cold load's worker guesses the plan's access diff (engine/access_ahead.py); its answer is used only
when the guess was the plan. `run` is the worker's side, `fitting` the check this process makes."""
from __future__ import annotations

from reconciler.core.ids import make_id
from reconciler.core.plan import CREATE, DELETE, KEEP, Action, Plan
from reconciler.core.record import READY, Record
from reconciler.core.resolve import Resolution
from reconciler.core.resource import Resource
from reconciler.engine.access_ahead import AccessAhead, fitting
from reconciler.engine.access_plan import plan_access

POLICY = {"version": "v1", "type": "policy", "name": "analysts-read",
          "policy": {"subjects": {"groups": ["analysts"]}, "datasets": ["lake://payments/*"], "access": "allow"}}
WORKFLOW = {"version": "v1", "type": "workflow", "name": "daily", "workspace": "payments", "owner": "payments",
            "workflow": {"dag": [{"name": "clean", "stack": "sql",
                                  "spec": {"steps": [{"name": "v", "sql": "SELECT 1"}],
                                           "outputs": [{"from": "v", "dataset": "lake://payments/valid"}]}}]}}


class V:  # what collect reads of a validation result in this process
    def __init__(self, spec, hash_):
        self.spec, self.hash, self.diagnostics, self.refs = spec, hash_, (), ()
        self.identity = (spec["type"], spec.get("workspace"), spec["name"])


def resource(spec, hash_) -> Resource:
    rid = make_id(spec["type"], spec["name"], spec.get("workspace"))
    return Resource(rid, spec["type"], spec["name"], spec.get("workspace"), spec, "f.yaml", 0, 1, hash=hash_)


def setup(records=None):
    job = AccessAhead(records or {}, None)
    items = [job.collect("a/policy.yaml", 0, V(POLICY, "h-policy")), job.collect("b/flow.yaml", 0, V(WORKFLOW, "h-flow"))]
    answer = job.run(items)
    res = Resolution(resources={r.id: r for r in (resource(POLICY, "h-policy"), resource(WORKFLOW, "h-flow"))})
    hashes = {r.id: r.hash for r in res.resources.values()}
    return answer, res, hashes.get


def test_the_guess_is_taken_when_it_is_the_plan_and_equals_the_access_diff_worked_out_here():
    answer, res, hash_of = setup()
    plan = Plan(actions=[Action(id=rid, action=CREATE, type=r.type, name=r.name, resource=r)
                         for rid, r in res.resources.items()])
    rows = fitting(answer, plan, res, hash_of)
    assert rows and rows == plan_access(plan, {}, res.resources, None)


def test_a_policy_the_plan_keeps_or_drops_refuses_the_guess():
    answer, res, hash_of = setup()
    policy = res.resources["policy:analysts-read"]
    kept = Plan(actions=[Action(id=policy.id, action=KEEP, type="policy", name=policy.name)])
    assert fitting(answer, kept, res, hash_of) is None


def test_other_resources_than_guessed_refuse_the_guess():
    answer, res, hash_of = setup()
    plan = Plan(actions=[Action(id="policy:analysts-read", action=CREATE, type="policy", name="analysts-read",
                                resource=res.resources["policy:analysts-read"])])
    assert fitting(answer, plan, res, hash_of) is not None
    assert fitting(answer, plan, res, {"policy:analysts-read": "h-policy", "workflow:payments/daily": "other"}.get) is None
    del res.resources["workflow:payments/daily"]  # dropped by the resolver (a bad reference, a cycle)
    assert fitting(answer, plan, res, hash_of) is None


def test_a_recorded_policy_that_left_git_is_guessed_deleted():
    gone = Record(id="policy:old", type="policy", name="old", workspace=None, spec=dict(POLICY, name="old"),
                  hash="h-old", phase=READY)
    answer, res, hash_of = setup({"policy:old": gone})
    plan = Plan(actions=[Action(id=rid, action=CREATE, type=r.type, name=r.name, resource=r)
                         for rid, r in res.resources.items()]
                + [Action(id="policy:old", action=DELETE, type="policy", name="old")])
    assert fitting(answer, plan, res, hash_of) == plan_access(plan, {"policy:old": gone}, res.resources, None)
    without_delete = Plan(actions=plan.actions[:-1])  # the plan kept it instead (prune: "false")
    assert fitting(answer, without_delete, res, hash_of) is None


def test_duplicate_ids_give_no_guess():
    job = AccessAhead({}, None)
    item = job.collect("a.yaml", 0, V(POLICY, "h"))
    assert job.run([item, ("b.yaml",) + item[1:]]) is None
